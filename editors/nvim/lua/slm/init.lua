-- slm.nvim: ghost-text completions from slm-lsp, an offline language server that runs a small
-- GGUF model in-process.
--
--   require("slm").setup({ model = "/path/to/model.gguf" })
--
-- See :help slm.
local M = {}

--- The plugin version; matches the server's (slm_lsp.__version__).
M.version = "0.1.0"

local did_setup = false
local enabled = true

local function notify(msg, level)
  vim.notify("[slm] " .. msg, level or vim.log.levels.INFO)
end

---@return boolean
function M.is_enabled()
  return enabled
end

---@return boolean
function M.is_setup()
  return did_setup
end

--- Turns completions on (requests while typing).
function M.enable()
  enabled = true
end

--- Turns completions off: clears the ghost text (and a next edit) and sends no more requests. The server keeps
--- running (and the model loaded), so :SlmToggle is instant.
function M.disable()
  enabled = false
  require("slm.suggestion").reset()
  require("slm.next_edit").reset()
  require("slm.cursor").cancel()
end

--- :SlmToggle
---@param silent boolean|nil
---@return boolean enabled
function M.toggle(silent)
  if enabled then
    M.disable()
  else
    M.enable()
  end
  if not silent then
    notify(enabled and "completions enabled" or "completions disabled")
  end
  return enabled
end

local function create_autocmds()
  local suggestion = require("slm.suggestion")
  local next_edit = require("slm.next_edit")
  local client = require("slm.client")
  local config = require("slm.config")
  local group = vim.api.nvim_create_augroup("slm", { clear = true })
  local function attached(bufnr)
    return client.get(bufnr) ~= nil
  end

  vim.api.nvim_create_autocmd("FileType", {
    group = group,
    desc = "[slm] start or attach the server",
    callback = function(args)
      client.attach(args.buf)
    end,
  })
  vim.api.nvim_create_autocmd("InsertEnter", {
    group = group,
    desc = "[slm] request a suggestion",
    callback = function(args)
      if enabled and config.options.auto_trigger and attached(args.buf) then
        suggestion.schedule()
      end
    end,
  })
  vim.api.nvim_create_autocmd({ "TextChangedI", "TextChangedP", "CursorMovedI" }, {
    group = group,
    desc = "[slm] follow the typing",
    callback = function(args)
      if enabled and attached(args.buf) then
        suggestion.on_change()
      end
    end,
  })
  vim.api.nvim_create_autocmd({ "InsertLeave", "BufLeave" }, {
    group = group,
    desc = "[slm] clear the ghost text",
    callback = function()
      suggestion.reset()
    end,
  })
  -- Next edits: asked for after an edit in Normal mode and on leaving Insert mode after typing
  -- (and after an accepted completion, from suggestion.accept); any edit hides the one shown.
  vim.api.nvim_create_autocmd("InsertEnter", {
    group = group,
    desc = "[slm] remember the text, to ask for a next edit on leaving only after typing",
    callback = function(args)
      next_edit.on_insert_enter(args.buf)
    end,
  })
  vim.api.nvim_create_autocmd({ "TextChanged", "TextChangedI", "TextChangedP" }, {
    group = group,
    desc = "[slm] next edit: hide the one shown, ask again",
    callback = function(args)
      if attached(args.buf) then
        next_edit.on_text_changed(args.buf, args.event ~= "TextChanged")
      end
    end,
  })
  vim.api.nvim_create_autocmd("InsertLeave", {
    group = group,
    desc = "[slm] next edit: hide the one shown, ask after typing",
    callback = function(args)
      if attached(args.buf) then
        next_edit.on_insert_leave(args.buf)
      end
    end,
  })
  vim.api.nvim_create_autocmd("BufLeave", {
    group = group,
    desc = "[slm] next edit: hide it",
    callback = function()
      next_edit.reset()
    end,
  })
  -- Where the cursor comes to rest: the server warms the prompt there (slm.cursor).
  local cursor = require("slm.cursor")
  vim.api.nvim_create_autocmd(
    { "BufEnter", "WinEnter", "FocusGained", "LspAttach", "CursorMoved", "CursorMovedI" },
    {
      group = group,
      desc = "[slm] tell the server where the cursor rests",
      callback = function(args)
        if enabled and attached(args.buf) then
          cursor.schedule()
        end
      end,
    }
  )
  vim.api.nvim_create_autocmd("VimLeavePre", {
    group = group,
    desc = "[slm] the server stops with Neovim: no restart",
    callback = function()
      client.on_vim_leave()
    end,
  })
  vim.api.nvim_create_autocmd("ColorScheme", {
    group = group,
    desc = "[slm] highlight groups",
    callback = function()
      vim.api.nvim_set_hl(0, suggestion.hl_group, { link = "Comment", default = true })
      next_edit.set_highlights()
    end,
  })
end

--- Configures the plugin and starts the server for buffers of enabled filetypes (already open
--- ones too). Runs once; later calls are ignored with a warning.
---@param opts slm.Options|nil
---@return boolean ok
function M.setup(opts)
  if did_setup then
    notify("setup() was already called; ignoring this call", vim.log.levels.WARN)
    return false
  end
  if vim.fn.has("nvim-0.10") ~= 1 then
    notify("needs Neovim 0.10 or newer", vim.log.levels.ERROR)
    return false
  end
  local config = require("slm.config")
  local ok, err = pcall(config.set, opts or {})
  if not ok then
    notify("invalid option: " .. tostring(err), vim.log.levels.ERROR)
    return false
  end
  did_setup = true
  enabled = true
  local suggestion = require("slm.suggestion")
  vim.api.nvim_set_hl(0, suggestion.hl_group, { link = "Comment", default = true })
  require("slm.next_edit").set_highlights()
  local next_edit_options = config.options.next_edit
  require("slm.keymaps").setup(config.options.keymaps, next_edit_options and next_edit_options.keymaps)
  create_autocmds()
  require("slm.client").attach_all()
  return true
end

return M
