-- :checkhealth slm
local M = {}

local health = vim.health

local function ms(value)
  return type(value) == "number" and ("%d ms"):format(math.floor(value + 0.5)) or "-"
end

local function check_neovim()
  local v = vim.version()
  local version = ("%d.%d.%d"):format(v.major, v.minor, v.patch)
  if vim.fn.has("nvim-0.10") == 1 then
    health.ok("Neovim " .. version)
  else
    health.error("Neovim " .. version .. " is too old", { "slm needs Neovim 0.10 or newer" })
  end
  if vim.lsp.inline_completion then
    health.info("vim.lsp.inline_completion is available; this plugin draws its own ghost text")
  end
end

local function check_setup()
  local slm = require("slm")
  if not slm.is_setup() then
    health.error("setup() was not called", { 'Add require("slm").setup({}) to your config' })
    return false
  end
  health.ok("setup() called (plugin version " .. slm.version .. ")")
  if slm.is_enabled() then
    health.ok("completions enabled")
  else
    health.warn("completions disabled", { "Run :SlmToggle" })
  end
  return true
end

local function keys(value)
  if type(value) == "string" then
    return value
  end
  return type(value) == "table" and #value > 0 and table.concat(value, ", ") or "no key"
end

local function check_next_edit()
  local o = require("slm.config").options.next_edit
  if not o then
    health.info("next edits: off (next_edit = false)")
    return
  elseif not o.enabled then
    health.info("next edits: off (next_edit.enabled = false)")
    return
  end
  local km = o.keymaps or {}
  health.ok(
    ("next edits: asked for %d ms after an edit; %s jumps to one and applies it, %s dismisses it"):format(
      o.debounce_ms,
      keys(km.accept),
      keys(km.dismiss)
    )
  )
  local stats = require("slm.next_edit").stats
  local counts = ("%d asked, %d shown, %d applied"):format(stats.requests, stats.shown, stats.applied)
  if stats.errors > 0 then
    health.warn(("next edits: %s, %d error answers"):format(counts, stats.errors), {
      "The server may not know slm/nextEdit: update slm-lsp to the plugin's version",
      "See :LspLog",
    })
  else
    health.info("next edits: " .. counts)
  end
end

local function check_command(opts)
  local exe = opts.cmd[1]
  local path = vim.fn.exepath(exe)
  if path ~= "" then
    health.ok(("server command found: %s (%s)"):format(table.concat(opts.cmd, " "), path))
  else
    health.error("server command not found: " .. exe, {
      "Install the server (pip install slm-lsp, or `make install` in its repository)",
      'or set cmd = { "/path/to/slm-lsp", "serve" } in setup()',
    })
  end
  if opts.model then
    local is_file = vim.fn.filereadable(vim.fn.expand(opts.model)) == 1
    if is_file or opts.model:match("^hf:") or opts.model:match("^ollama:") then
      health.ok("model: " .. opts.model)
    else
      health.error("model not found: " .. opts.model, { "Set `model` to a GGUF file, or run `slm-lsp pull`" })
    end
  else
    health.info("model: the server's default (model.path, $SLM_LSP_MODEL, then the user cache)")
  end
end

local function check_server()
  local client = require("slm.client")
  local methods = require("slm.methods")
  local c = client.get()
  local last = require("slm.status").last
  if not c and last and last.state == "crashed" then
    health.error("the server crashed too often to be restarted: " .. last.detail, {
      "See :LspLog for the cause (a model or adapter llama.cpp cannot run?)",
      "then :SlmRestart",
    })
    return
  elseif not c and last and last.state == "restarting" then
    health.warn("the server stopped unexpectedly: " .. last.detail, { "See :LspLog for the cause" })
    return
  elseif not c then
    health.warn("the server is not running", {
      "It starts with the first buffer of an enabled filetype",
      "See :LspLog if it exited",
    })
    return
  end
  local buffers = {}
  for bufnr in pairs(c.attached_buffers or {}) do
    local name = vim.api.nvim_buf_get_name(bufnr)
    buffers[#buffers + 1] = name ~= "" and vim.fn.fnamemodify(name, ":~:.") or ("#" .. bufnr)
  end
  table.sort(buffers)
  health.ok(
    ("server attached (client %d, position encoding %s) to %d buffer(s): %s"):format(
      c.id,
      tostring(c.offset_encoding),
      #buffers,
      table.concat(buffers, ", ")
    )
  )
  -- The plugin and the server are released together: other versions may disagree on the
  -- custom slm/* names.
  local server_version = c.server_info and c.server_info.version
  local plugin_version = require("slm").version
  if server_version == plugin_version then
    health.ok("server version " .. server_version .. " matches the plugin")
  else
    health.warn(
      ("server version %s, plugin version %s"):format(tostring(server_version), plugin_version),
      { "Update the plugin and the server to the same release" }
    )
  end
  local caps = c.server_capabilities or {}
  if caps.inlineCompletionProvider then
    health.ok("server provides textDocument/inlineCompletion")
  else
    health.error("server does not advertise textDocument/inlineCompletion", { "Update slm-lsp" })
  end
  local status = require("slm.status").last
  if status then
    local text = ("model state: %s%s, last latency %s"):format(
      status.state,
      status.detail ~= "" and (" (" .. status.detail .. ")") or "",
      ms(status.latency_ms)
    )
    if status.state == "ready" or status.state == "generating" then
      health.ok(text)
    elseif status.state == "loading" then
      health.info(text)
    else
      health.error(text, { "See :SlmStatus and :LspLog" })
    end
  else
    health.info("no slm/status notification received yet")
  end
  local resp = client.request_sync(c, "workspace/executeCommand", { command = methods.COMMAND_STATUS }, 3000)
  if resp and resp.result and not resp.err then
    local r = resp.result
    local function field(v)
      return (v == nil or v == vim.NIL) and "-" or tostring(v)
    end
    health.ok(
      ("slm.status: state %s, model %s (template %s), adapter %s"):format(
        field(r.state),
        field(r.model),
        field(r.template),
        field(r.adapter)
      )
    )
  else
    health.warn("slm.status did not answer: " .. vim.inspect(resp and resp.err or "timeout"))
  end
end

function M.check()
  health.start("slm")
  check_neovim()
  if not check_setup() then
    return
  end
  check_next_edit()
  local opts = require("slm.config").options
  check_command(opts)
  check_server()
end

return M
