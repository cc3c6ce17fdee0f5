-- Headless Neovim driver for tests/e2e/test_nvim.py.
--
-- Run as: nvim --headless --clean -u tests/e2e/nvim/init.lua FILE.py
-- Environment (set by the test):
--   SLM_NVIM_OUT         where the JSON report is written
--   SLM_NVIM_SERVER_CMD  the server command, a JSON array
--   SLM_NVIM_CURSOR      "LINE:COL" for the main request (1-based line, 0-based byte column,
--                        as nvim_win_set_cursor takes them)
--   SLM_NVIM_CURSOR2     "LINE:COL" for the request after the error
--   SLM_NVIM_POSITION_ENCODING  optional: the only position encoding offered to the server
--                        (default: Neovim's own list, utf-8 first)
--
-- Neovim starts the server itself (vim.lsp.start), then sends textDocument/inlineCompletion
-- (raw method: Neovim 0.11 has no builtin inline completion) and textDocument/completion,
-- a request past the end of the buffer (must be an LSP error), a normal request after it,
-- slm.status (workspace/executeCommand), applies the completion edit to the buffer the way a
-- completion menu would and shuts the server down.
-- Every failure writes {"ok": false, "error": ...} and exits with :cquit 1.

vim.cmd("filetype on")

local driver = dofile(vim.fs.dirname(debug.getinfo(1, "S").source:sub(2)) .. "/driver.lua")
local report = { ok = false, messages = {}, statuses = {} }
local d = driver.new(report, "slm-lsp nvim e2e")
local write_report, fail = d.write_report, d.fail

local function parse_cursor(name)
  local value = os.getenv(name) or ""
  local line, col = value:match("^(%d+):(%d+)$")
  if not line then
    error(name .. " must be LINE:COL, got " .. vim.inspect(value))
  end
  return { tonumber(line), tonumber(col) }
end

-- One request; an LSP error or a timeout is returned as a table, not raised.
local function request(client, bufnr, method, params, timeout_ms)
  local resp, why = client:request_sync(method, params, timeout_ms or 20000, bufnr)
  if resp == nil then
    return { transport_error = tostring(why or "request failed (client stopped?)") }
  end
  return { err = resp.err, result = resp.result }
end

-- Inline completion at the cursor; retried a few times while it comes back empty.
local function inline_at_cursor(client, bufnr)
  local params = vim.lsp.util.make_position_params(0, client.offset_encoding)
  params.context = { triggerKind = 1 } -- Invoked
  local resp
  for attempt = 1, 5 do
    resp = request(client, bufnr, "textDocument/inlineCompletion", params)
    resp.attempts = attempt
    if resp.transport_error or resp.err then
      error("textDocument/inlineCompletion failed: " .. vim.inspect(resp))
    end
    if resp.result and resp.result.items and #resp.result.items > 0 then
      break
    end
    vim.wait(200)
  end
  resp.position = params.position
  return resp
end

local function main()
  local bufnr = vim.api.nvim_get_current_buf()
  local file = vim.api.nvim_buf_get_name(bufnr)
  report.filetype = vim.bo[bufnr].filetype
  if report.filetype ~= "python" then
    error("filetype of " .. file .. " is " .. vim.inspect(report.filetype) .. ", expected python")
  end
  -- The cursor may sit after the last character of a line (as in insert mode).
  vim.o.virtualedit = "onemore"

  local cmd_json = os.getenv("SLM_NVIM_SERVER_CMD")
  if not cmd_json then
    error("SLM_NVIM_SERVER_CMD is not set")
  end
  local cmd = vim.json.decode(cmd_json)
  local capabilities = vim.lsp.protocol.make_client_capabilities()
  local encoding = os.getenv("SLM_NVIM_POSITION_ENCODING") or ""
  if encoding ~= "" then
    capabilities.general.positionEncodings = { encoding }
  end
  local exit_info
  local client_id = vim.lsp.start({
    name = "slm-lsp",
    cmd = cmd,
    capabilities = capabilities,
    root_dir = vim.fs.dirname(file),
    -- enabledLanguages: completions only come when Neovim sends languageId "python".
    init_options = { completion = { maxTokens = 12, timeBudgetMs = 5000, enabledLanguages = { "python" } } },
    handlers = {
      ["window/showMessage"] = function(_, result)
        table.insert(report.messages, result)
      end,
      ["slm/status"] = function(_, result)
        table.insert(report.statuses, result.state)
      end,
    },
    on_exit = function(code, signal)
      exit_info = { code = code, signal = signal }
    end,
  }, { bufnr = bufnr })
  if not client_id then
    error("vim.lsp.start returned nil")
  end
  local client = assert(vim.lsp.get_client_by_id(client_id))

  if not vim.wait(30000, function()
    return client.initialized == true or exit_info ~= nil
  end, 20) or exit_info then
    error("the server did not initialize: " .. vim.inspect(exit_info))
  end
  if not vim.wait(5000, function()
    return vim.lsp.buf_is_attached(bufnr, client_id)
  end, 20) then
    error("the client did not attach to the buffer")
  end
  report.server_name = client.server_info and client.server_info.name
  report.offset_encoding = client.offset_encoding
  local caps = client.server_capabilities or {}
  report.inline_provider = caps.inlineCompletionProvider ~= nil

  -- 1. Inline completion mid-function (queued by the server until the model has loaded).
  local cursor = parse_cursor("SLM_NVIM_CURSOR")
  vim.api.nvim_win_set_cursor(0, cursor)
  local actual = vim.api.nvim_win_get_cursor(0)
  if actual[1] ~= cursor[1] or actual[2] ~= cursor[2] then
    error("cursor is at " .. vim.inspect(actual) .. ", wanted " .. vim.inspect(cursor))
  end
  report.line_before = vim.api.nvim_buf_get_lines(bufnr, cursor[1] - 1, cursor[1], true)[1]
  report.inline = inline_at_cursor(client, bufnr)

  -- 2. textDocument/completion at the same place.
  local cparams = vim.lsp.util.make_position_params(0, client.offset_encoding)
  cparams.context = { triggerKind = 1 }
  report.completion = request(client, bufnr, "textDocument/completion", cparams)
  report.completion.position = cparams.position

  -- 3. A line past the end of the buffer: an LSP error, not a crash.
  local past = {
    textDocument = { uri = vim.uri_from_bufnr(bufnr) },
    position = { line = vim.api.nvim_buf_line_count(bufnr) + 10, character = 0 },
    context = { triggerKind = 1 },
  }
  report.past_end = request(client, bufnr, "textDocument/inlineCompletion", past, 10000)
  report.past_end.position = past.position

  -- 4. Still alive: a normal request somewhere else (not answered from the cache).
  vim.api.nvim_win_set_cursor(0, parse_cursor("SLM_NVIM_CURSOR2"))
  report.after_error = inline_at_cursor(client, bufnr)
  report.after_error_line = vim.api.nvim_get_current_line()

  -- 5. The server's own view: without arguments, and with an empty argument list (what
  --    clients that always send "arguments", VS Code's included, do).
  report.status = request(client, bufnr, "workspace/executeCommand", { command = "slm.status" })
  report.status_empty_args =
    request(client, bufnr, "workspace/executeCommand", { command = "slm.status", arguments = {} })

  -- 6. Apply the completion item's edit the way a completion menu would.
  local items = report.completion.result and report.completion.result.items or {}
  if items[1] and items[1].textEdit then
    vim.lsp.util.apply_text_edits({ vim.deepcopy(items[1].textEdit) }, bufnr, client.offset_encoding)
    report.line_after_edit = vim.api.nvim_buf_get_lines(bufnr, cursor[1] - 1, cursor[1], true)[1]
  end

  -- 7. Graceful shutdown (shutdown + exit); the server process must exit by itself.
  client:stop()
  vim.wait(15000, function()
    return exit_info ~= nil
  end, 20)
  report.exit = exit_info or vim.NIL
  report.ok = true
  write_report()
  vim.cmd("qall!")
end

vim.api.nvim_create_autocmd("VimEnter", {
  once = true,
  callback = function()
    -- Hard stop well inside the test's subprocess timeout (only fires while Lua waits).
    vim.defer_fn(function()
      fail("timed out after 90 s")
    end, 90000)
    vim.schedule(function()
      local ok, err = xpcall(main, debug.traceback)
      if not ok then
        fail(err)
      end
    end)
  end,
})
