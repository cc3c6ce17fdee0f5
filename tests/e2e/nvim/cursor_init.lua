-- Headless Neovim driver for tests/e2e/test_nvim_cursor.py: the plugin tells the real server where
-- the cursor came to rest (slm/cursor, editors/nvim/lua/slm/cursor.lua), and the server warms there.
--
-- Run as: nvim --headless --clean -u tests/e2e/nvim/cursor_init.lua FILE.py
-- Environment (set by the test):
--   SLM_NVIM_OUT         where the JSON report is written
--   SLM_NVIM_SERVER_CMD  the server command, a JSON array
--   SLM_NVIM_PLUGIN_DIR  editors/nvim (prepended to 'runtimepath')
--   SLM_NVIM_OTHER       a second file, opened with :edit near the end
--
-- The user's keys go in with nvim_input() (Neovim's own loop runs CursorMoved, BufEnter...); a spy
-- on require("slm.client").notify records every slm/cursor the plugin sends, and the server's
-- warmups are read from slm.status (kvStates: warmups + warmups_stopped) through the plugin's own
-- client. Each step records the notifications it caused and the warmup count before and after;
-- the asserts are in Python.

local driver = dofile(vim.fs.dirname(debug.getinfo(1, "S").source:sub(2)) .. "/driver.lua")
local api = vim.api
local report = { ok = false, notifications = {}, steps = {} }

local d = driver.new(report, "slm nvim cursor e2e")
local write_report, sleep, wait_for = d.write_report, d.sleep, d.wait_for
local getenv = driver.getenv
d.capture_notifications({ "notifications" })

---@type {uri: string, line: integer, character: integer, ms: integer}[]
local sent = {}
local slm_client, cursor, status

local function configure()
  vim.opt.rtp:prepend(getenv("SLM_NVIM_PLUGIN_DIR"))
  vim.cmd("filetype on")
  slm_client = require("slm.client")
  local real_notify = slm_client.notify
  slm_client.notify = function(c, method, params)
    if method == "slm/cursor" then
      local p = params.position
      sent[#sent + 1] = { uri = params.textDocument.uri, line = p.line, character = p.character, ms = vim.uv.now() }
    end
    return real_notify(c, method, params)
  end
  cursor = require("slm.cursor")
  status = require("slm.status")
  report.setup = require("slm").setup({
    cmd = vim.json.decode(getenv("SLM_NVIM_SERVER_CMD")),
    auto_trigger = false, -- no completion request mixes in: the warmups are the cursor's and the opens' only
    next_edit = false,
    settings = {
      completion = { maxTokens = 4, prefixTokens = 256, suffixTokens = 64 },
      context = { enabled = false },
    },
  })
end

d.configure(configure)

--- The server's warmups so far (done and stopped), from slm.status through the plugin's client.
local function warmups()
  local answer
  slm_client.execute("slm.status", {}, function(err, result)
    answer = { err = err, result = result }
  end)
  wait_for("slm.status", 10000, function()
    return answer
  end, 5)
  if answer.err then
    error("slm.status failed: " .. vim.inspect(answer.err), 0)
  end
  local kv = answer.result.kvStates
  return kv.warmups + kv.warmups_stopped
end

--- The warmup count once it has stopped changing (the same three readings 500 ms apart): the
--- warmups already asked for are done (a replaced one that never started is never counted).
local function settled_warmups()
  local last, same = warmups(), 0
  while same < 2 do
    sleep(500)
    local now = warmups()
    same = now == last and same + 1 or 0
    last = now
  end
  return last
end

--- The warmup count once it has grown past `n` (a warmup asked for has finished).
local function warmups_past(n, what)
  return wait_for("a warmup after " .. what, 20000, function()
    local now = warmups()
    return now > n and now
  end, 100)
end

local function cursor_state()
  local c = api.nvim_win_get_cursor(0)
  return { row = c[1], col = c[2], line = api.nvim_get_current_line(), uri = vim.uri_from_bufnr(0) }
end

--- Types `keys` (Normal mode), waits until the plugin has sent a notification or, with
--- `expect_none`, for the rest time twice, and returns what was sent meanwhile and where the
--- cursor is.
local function step(name, keys, expect_none)
  local first = #sent + 1
  local before = { sent = cursor.stats.sent, repeated = cursor.stats.repeated }
  if type(keys) == "function" then
    keys()
  else
    api.nvim_input(keys)
  end
  if expect_none then
    sleep(2 * cursor.REST_MS + 200)
  else
    wait_for("slm/cursor after " .. name, 5000, function()
      return #sent >= first
    end)
    sleep(cursor.REST_MS + 200) -- anything sent twice would show now
  end
  local s = {
    name = name,
    sent = vim.list_slice(sent, first),
    cursor = cursor_state(),
    repeated = cursor.stats.repeated - before.repeated,
    counted = cursor.stats.sent - before.sent,
  }
  report.steps[#report.steps + 1] = s
  return s
end

local function main()
  local bufnr = api.nvim_get_current_buf()
  local c = wait_for("the server attached and its model ready", 60000, function()
    return status.last and status.last.state == "ready" and slm_client.get(bufnr)
  end)
  report.offset_encoding = c.offset_encoding
  -- Attaching is a rest too: the top of the buffer, once.
  wait_for("the first slm/cursor", 5000, function()
    return #sent > 0
  end)
  report.on_attach = vim.deepcopy(sent)
  local start = settled_warmups()

  -- 1. A jump, as a user makes it: 30G, 60G, then 100G$ before the cursor rests. One
  --    notification, for where it came to rest; the server warms there.
  local jump = step("jump", function()
    api.nvim_input("30G")
    sleep(30)
    api.nvim_input("60G")
    sleep(30)
    api.nvim_input("100G$")
  end)
  jump.warmups_before = start
  jump.warmups_after = warmups_past(start, "the jump")
  local after_jump = settled_warmups()

  -- 2. One line down: another line, so it is sent; the server does not warm for so short a move.
  local near = step("one line down", "j")
  near.warmups_before = after_jump
  sleep(1000)
  near.warmups_after = warmups()

  -- 3. Along the same line: nothing sent.
  step("same line", "0", true)

  -- 4. Completions off: nothing sent, wherever the cursor goes; back on, the next rest is sent.
  step("disabled", function()
    vim.cmd("SlmDisable")
    api.nvim_input("50G")
  end, true)
  vim.cmd("SlmEnable")
  step("enabled again", "k")

  -- 5. Another buffer: entering it is a rest there; coming back to the first one is another, and
  --    the server warms there (the document was open all along: the warmup is the cursor's).
  step("other buffer", function()
    vim.cmd("edit " .. vim.fn.fnameescape(getenv("SLM_NVIM_OTHER")))
  end)
  local before_back = settled_warmups()
  local back = step("back", function()
    vim.cmd("buffer " .. bufnr)
  end)
  back.warmups_before = before_back
  back.warmups_after = warmups_past(before_back, "coming back")

  report.notifications_total = #sent
  report.ok = true
  write_report()
  vim.cmd("qall!")
end

d.start(main, 90000, "timed out after 90 s")
