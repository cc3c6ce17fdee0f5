-- Headless Neovim driver for tests/e2e/test_nvim_edit.py: the plugin's edit commands against the
-- real server. Run as: nvim --headless --clean -u tests/e2e/nvim/edit_init.lua FILE.py
-- Environment: SLM_NVIM_OUT (the JSON report), SLM_NVIM_SERVER_CMD (a JSON array),
-- SLM_NVIM_PLUGIN_DIR (editors/nvim).
-- Steps: wait for the model; list the code actions of lines 4-5 (textDocument/codeAction, what
-- vim.lsp.buf.code_action() shows); :4,5SlmEdit with an instruction; then the "Rewrite
-- selection…" action's command (slm.rewriteSelection) with vim.ui.input answering. After each
-- edit the report has vim.g.slm_last_edit and the buffer's lines.

local driver = dofile(vim.fs.dirname(debug.getinfo(1, "S").source:sub(2)) .. "/driver.lua")
assert(os.getenv("SLM_NVIM_OUT"), "SLM_NVIM_OUT is not set")
local report = { ok = false, notifications = {}, steps = {} }
local d = driver.new(report, "slm nvim edit e2e")
d.capture_notifications({ "notifications" })

local function finish(ok, err)
  if not ok then
    d.fail(err)
    return
  end
  report.ok = true
  d.write_report()
  vim.cmd("qall!")
end

vim.opt.rtp:prepend(assert(os.getenv("SLM_NVIM_PLUGIN_DIR")))
vim.cmd("filetype on")
vim.cmd("runtime plugin/slm.lua")
require("slm").setup({
  cmd = vim.json.decode(assert(os.getenv("SLM_NVIM_SERVER_CMD"))),
  settings = { context = { enabled = false } },
})

local function ready()
  local client = require("slm.client").get(0)
  if not client then
    return false
  end
  local answer = require("slm.client").request_sync(client, "workspace/executeCommand",
    { command = "slm.status", arguments = {} }, 2000, 0)
  return answer ~= nil and answer.result ~= nil and answer.result.state == "ready"
end

local function edit_step(name, run)
  vim.g.slm_last_edit = nil
  run()
  if not vim.wait(280000, function() return vim.g.slm_last_edit ~= nil end, 100) then
    error(name .. ": no answer to slm.edit")
  end
  table.insert(report.steps, {
    name = name,
    result = vim.g.slm_last_edit,
    lines = vim.api.nvim_buf_get_lines(0, 0, -1, false),
  })
end

local function main()
  if not vim.wait(60000, ready, 100) then
    error("the server did not become ready")
  end
  local uri = vim.uri_from_bufnr(0)
  local params = {
    textDocument = { uri = uri },
    range = { start = { line = 3, character = 0 }, ["end"] = { line = 5, character = 0 } },
    context = { diagnostics = {} },
  }
  local answers = vim.lsp.buf_request_sync(0, "textDocument/codeAction", params, 10000) or {}
  report.titles = {}
  for _, answer in pairs(answers) do
    for _, action in ipairs(answer.result or {}) do
      table.insert(report.titles, action.title)
    end
  end
  edit_step("SlmEdit", function()
    vim.cmd("4,5SlmEdit rename b to y")
  end)
  vim.ui.input = function(opts, on_confirm)
    report.prompt = opts.prompt
    on_confirm("rename a to x")
  end
  edit_step("rewriteSelection", function()
    vim.lsp.commands["slm.rewriteSelection"]({
      title = "Rewrite selection…",
      command = "slm.rewriteSelection",
      arguments = { { uri = uri, range = params.range } },
    }, {})
  end)
end

vim.api.nvim_create_autocmd("VimEnter", {
  once = true,
  callback = function()
    vim.schedule(function()
      local ok, err = pcall(main)
      finish(ok, err)
    end)
  end,
})
