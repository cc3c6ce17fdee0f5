-- Headless Neovim driver for tests/e2e/test_neovim_next_edit.py: the plugin's next-edit
-- suggestions (editors/nvim/lua/slm/next_edit.lua) against the real server.
--
-- Run as: nvim --headless --clean -u tests/e2e/nvim/next_edit_init.lua FILE.py
-- Environment (set by the test):
--   SLM_NVIM_OUT         where the JSON report is written
--   SLM_NVIM_SERVER_CMD  the server command, a JSON array
--   SLM_NVIM_PLUGIN_DIR  editors/nvim (prepended to 'runtimepath')
--   SLM_NVIM_CASES       JSON list of rendering cases: { name, lines, cursor = {row, col} (1-based
--                        row, byte col), edit = { range, newText }, keys = { ... } }; or, instead
--                        of edit, inline (an inlineCompletion answer) and position (its request's)
--   SLM_NVIM_WIRE_MS     how long to wait for the server's answers (the real model is slow)
--   SLM_NVIM_ONLY_RENAME 1: the rename only (the real model's answer to it is kept, and applied)
--
-- Two parts. The wire: real edits typed with nvim_input (cw...<Esc>, then x in Normal mode, then
-- a completion accepted with <Tab>) make the plugin send slm/nextEdit after its debounce; every request and answer is recorded (a spy
-- on require("slm.client").request), and what the plugin then shows. The rendering: each case
-- loads its lines, shows its edit with require("slm.next_edit").show() (the result object the
-- server would answer), records the extmarks, then presses its keys one by one (<Tab>, <Esc>, x,
-- i<Tab>...) and records the cursor, the lines and the extmarks after each. Automatic requests
-- are off in that part so that no answer of the server mixes in. The asserts are in Python.
-- Keys go in with nvim_input() from a coroutine that waits on timers, so Neovim's own loop runs
-- the mappings and autocommands.

local driver = dofile(vim.fs.dirname(debug.getinfo(1, "S").source:sub(2)) .. "/driver.lua")
local api = vim.api
local report = { ok = false, notifications = {}, wire = {}, cases = {} }
local DEBOUNCE_MS = 200

local d = driver.new(report, "slm nvim next-edit e2e")
local write_report, fail, sleep, wait_for = d.write_report, d.fail, d.sleep, d.wait_for
local getenv = driver.getenv
d.capture_notifications({ "notifications" })

---@type {method: string, params: table, sent_ms: integer, answered: boolean, err: any, result: any, answered_ms: integer|nil}[]
local requests = {}
local next_edit, slm_client, config

local function configure()
  vim.opt.rtp:prepend(getenv("SLM_NVIM_PLUGIN_DIR"))
  vim.cmd("filetype on")
  slm_client = require("slm.client")
  local real_request = slm_client.request
  slm_client.request = function(c, method, params, handler, bufnr)
    if method ~= "slm/nextEdit" then
      return real_request(c, method, params, handler, bufnr)
    end
    local entry = { method = method, params = vim.deepcopy(params), sent_ms = vim.uv.now(), answered = false }
    requests[#requests + 1] = entry
    return real_request(c, method, params, function(err, result, ctx, cfg)
      entry.answered, entry.err, entry.result = true, err or vim.NIL, result or vim.NIL
      entry.answered_ms = vim.uv.now()
      handler(err, result, ctx, cfg)
    end, bufnr)
  end
  next_edit = require("slm.next_edit")
  config = require("slm.config")
  report.invalid_setups = d.invalid_setups({
    { next_edit = { debounce_ms = -1 } },
    { next_edit = { keymaps = { jump = "<Tab>" } } },
    { next_edit = true },
  })
  report.setup = require("slm").setup({
    cmd = vim.json.decode(getenv("SLM_NVIM_SERVER_CMD")),
    debounce_ms = 100000, -- no ghost text in this test: completions never fire on their own
    next_edit = { debounce_ms = DEBOUNCE_MS },
    -- A loaded CPU writes the real model's region slowly: the longest budget the server allows.
    settings = { context = { enabled = false }, completion = { maxTokens = 4 }, next_edit = { time_budget_ms = 120000 } },
  })
  report.notifications = {}
end

d.configure(configure)

local function marks()
  local out = {}
  for _, m in ipairs(api.nvim_buf_get_extmarks(0, next_edit.ns, 0, -1, { details = true })) do
    local d = m[4]
    local virt_lines = {}
    for _, chunks in ipairs(d.virt_lines or {}) do
      virt_lines[#virt_lines + 1] = { text = chunks[1] and chunks[1][1] or "", hl = chunks[1] and chunks[1][2] or vim.NIL }
    end
    out[#out + 1] = {
      row = m[2],
      col = m[3],
      end_row = d.end_row or vim.NIL,
      end_col = d.end_col or vim.NIL,
      hl = d.hl_group or vim.NIL,
      text = d.virt_text and d.virt_text[1] and d.virt_text[1][1] or vim.NIL,
      text_hl = d.virt_text and d.virt_text[1] and d.virt_text[1][2] or vim.NIL,
      pos = d.virt_text_pos or vim.NIL,
      virt_lines = virt_lines,
      above = d.virt_lines_above or false,
    }
  end
  return out
end

local function state()
  local c = api.nvim_win_get_cursor(0)
  return {
    lines = api.nvim_buf_get_lines(0, 0, -1, false),
    cursor = { c[1], c[2] },
    marks = marks(),
    visible = next_edit.is_visible(),
    mode = api.nvim_get_mode().mode,
    stats = vim.deepcopy(next_edit.stats),
  }
end

local function ready()
  local c = slm_client.get(0)
  if not c then
    return false
  end
  local answer
  slm_client.request(c, "workspace/executeCommand", { command = "slm.status", arguments = {} }, function(_, result)
    answer = result or vim.NIL
  end, 0)
  wait_for("slm.status", 10000, function()
    return answer
  end)
  return type(answer) == "table" and answer.state == "ready"
end

--- Waits until the plugin has sent its `n`-th slm/nextEdit request (`what`) and had its answer;
--- returns the request's entry.
local function answered_request(n, what, wire_ms)
  local entry = wait_for(what, 10000, function()
    return requests[n]
  end)
  wait_for(what .. ": the answer", wire_ms, function()
    return entry.answered
  end)
  return entry
end

--- Types `keys`, waits until Neovim took them all (and is in Normal mode when `normal`), and
--- until the plugin has asked for the next edit and had its answer.
local function edit_and_wait_answer(name, keys, wire_ms)
  local before = #requests
  local tick = api.nvim_buf_get_changedtick(0)
  local typed_ms = vim.uv.now()
  api.nvim_input(keys)
  wait_for(name .. ": the keys", 5000, function()
    return api.nvim_buf_get_changedtick(0) ~= tick and api.nvim_get_mode().mode == "n"
  end)
  local done_ms = vim.uv.now()
  local entry = answered_request(before + 1, name .. ": a slm/nextEdit request", wire_ms)
  sleep(50) -- the plugin's handler ran in the same callback; let it draw
  local c = api.nvim_win_get_cursor(0)
  table.insert(report.wire, {
    name = name,
    keys = keys,
    requests = #requests - before,
    params = entry.params,
    uri = vim.uri_from_bufnr(0),
    cursor = { c[1], c[2] },
    waited_ms = entry.sent_ms - done_ms,
    since_keys_ms = entry.sent_ms - typed_ms,
    answered_after_ms = entry.answered_ms - entry.sent_ms,
    err = entry.err,
    result = entry.result,
    state = state(),
  })
end

--- A completion accepted with <Tab> in Insert mode: the ghost text goes in (it comes before the
--- next edit), and the next edit is asked for after the debounce, still in Insert mode. Leaving
--- Insert mode then asks once more (the text changed there).
local function accept_and_wait_answers(wire_ms)
  local suggestion = require("slm.suggestion")
  api.nvim_win_set_cursor(0, { 2, 0 })
  api.nvim_input("O")
  wait_for("Insert mode", 5000, function()
    return api.nvim_get_mode().mode == "i"
  end)
  local before = #requests
  suggestion.show("total = 0")
  local step = { name = "accepted", ghost_shown = suggestion.is_visible() }
  local tick = api.nvim_buf_get_changedtick(0)
  local typed_ms = vim.uv.now()
  api.nvim_input("<Tab>")
  wait_for("the accept", 5000, function()
    return api.nvim_buf_get_changedtick(0) ~= tick
  end)
  local entry = answered_request(before + 1, "a slm/nextEdit request after the accept", wire_ms)
  local c = api.nvim_win_get_cursor(0)
  step.line = api.nvim_get_current_line()
  step.cursor = { c[1], c[2] }
  step.mode_at_answer = api.nvim_get_mode().mode
  step.requests = #requests - before
  step.params = entry.params
  step.uri = vim.uri_from_bufnr(0)
  step.since_keys_ms = entry.sent_ms - typed_ms
  step.err = entry.err
  step.result = entry.result
  step.state = state()
  api.nvim_input("<Esc>")
  local leave = answered_request(before + 2, "a slm/nextEdit request after leaving Insert mode", wire_ms)
  step.after_leaving = { requests = #requests - before, err = leave.err, params = leave.params }
  table.insert(report.wire, step)
end

local function run_case(case)
  local bufnr = api.nvim_get_current_buf()
  next_edit.reset()
  api.nvim_buf_set_lines(bufnr, 0, -1, false, case.lines)
  sleep(20) -- let TextChanged for set_lines pass (automatic requests are off)
  api.nvim_win_set_cursor(0, case.cursor)
  local entry = { name = case.name }
  if case.inline then
    -- An inline completion answer, handed to the plugin as if the server had sent it for a
    -- request at the cursor: a ranged item away from the cursor becomes a next edit.
    local suggestion = require("slm.suggestion")
    config.options.next_edit.enabled = true
    entry.shown = suggestion.on_result(case.inline, { position = case.position }, case.encoding or "utf-16", bufnr)
      or vim.NIL
    config.options.next_edit.enabled = false
    entry.ghost = suggestion.get_text() or vim.NIL
    suggestion.reset()
  else
    entry.shown = next_edit.show(bufnr, case.edit, case.encoding)
  end
  entry.initial = state()
  entry.steps = {}
  for _, keys in ipairs(case.keys or {}) do
    if keys == "@modify" then
      -- A change the user did not type (another plugin, :s): the edit shown is for older text.
      api.nvim_buf_set_text(bufnr, 0, 0, 0, 0, { "# " })
    else
      api.nvim_input(keys)
    end
    sleep(60)
    local s = state()
    s.keys = keys
    table.insert(entry.steps, s)
  end
  if api.nvim_get_mode().mode ~= "n" then
    api.nvim_input("<Esc>")
    wait_for("Normal mode", 2000, function()
      return api.nvim_get_mode().mode == "n"
    end)
  end
  table.insert(report.cases, entry)
end

local function main()
  report.filetype = vim.bo.filetype
  report.method = require("slm.methods").NEXT_EDIT_REQUEST
  report.hl = {
    delete = api.nvim_get_hl(0, { name = next_edit.hl_delete }),
    insert = api.nvim_get_hl(0, { name = next_edit.hl_insert }),
  }
  report.maps = {
    n_tab = vim.fn.maparg("<Tab>", "n", false, true).desc or vim.NIL,
    n_esc = vim.fn.maparg("<Esc>", "n", false, true).desc or vim.NIL,
    i_tab = vim.fn.maparg("<Tab>", "i", false, true).desc or vim.NIL,
  }
  local wire_ms = tonumber(os.getenv("SLM_NVIM_WIRE_MS") or "") or 30000
  wait_for("the server to be ready", 60000, ready)
  -- The wire: an edit in Insert mode (sent on leaving it), then one in Normal mode.
  api.nvim_win_set_cursor(0, { 1, 9 }) -- on the `r` of `def area(r):`
  edit_and_wait_answer("insert", "cwradius<Esc>", wire_ms)
  if os.getenv("SLM_NVIM_ONLY_RENAME") ~= "1" then
    api.nvim_win_set_cursor(0, { 2, 4 })
    edit_and_wait_answer("normal", "x", wire_ms)
    accept_and_wait_answers(wire_ms)
  end
  -- Nothing more is asked for without an edit.
  local count = #requests
  sleep(3 * DEBOUNCE_MS)
  report.quiet_requests = #requests - count
  -- An edit the server suggested: two <Tab>s apply it.
  if next_edit.is_visible() then
    local applied = { edit = next_edit.get(), before = api.nvim_buf_get_lines(0, 0, -1, false), steps = {} }
    for _, keys in ipairs({ "<Tab>", "<Tab>" }) do
      api.nvim_input(keys)
      sleep(60)
      table.insert(applied.steps, state())
    end
    report.applied_answer = applied
  end
  -- After the above: :checkhealth opens a tab, and leaving the buffer hides a next edit.
  local ok, err = pcall(vim.cmd, "checkhealth slm")
  report.health = { ok = ok, err = ok and vim.NIL or tostring(err), lines = api.nvim_buf_get_lines(0, 0, -1, false) }
  vim.cmd("tabclose")
  -- The rendering, with results passed in: no automatic requests from here on.
  config.options.next_edit.enabled = false
  next_edit.reset()
  for _, case in ipairs(vim.json.decode(getenv("SLM_NVIM_CASES"))) do
    run_case(case)
  end
end

local wire_ms = tonumber(os.getenv("SLM_NVIM_WIRE_MS") or "") or 30000
d.start(function()
  local ok, err = xpcall(main, debug.traceback)
  if not ok then
    fail(err)
    return
  end
  report.ok = true
  write_report()
  vim.cmd("qall!")
end, 2 * wire_ms + 120000, "timed out")
