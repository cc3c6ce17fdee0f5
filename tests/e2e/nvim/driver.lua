-- What the headless Neovim drivers share: the JSON report at $SLM_NVIM_OUT and failing with it,
-- the environment they read, what the plugin tells the user, and a main coroutine that waits on
-- timers (so that Neovim's own loop runs mappings, autocommands and redraws meanwhile).
--
-- A driver runs with -u, as a file and not a module, so it loads this one beside it:
--   local driver = dofile(vim.fs.dirname(debug.getinfo(1, "S").source:sub(2)) .. "/driver.lua")
--   local d = driver.new(report, "slm nvim plugin e2e")
local M = {}

--- `name` from the environment; an error when it is not set or empty.
---@param name string
---@return string
function M.getenv(name)
  local value = os.getenv(name)
  if value == nil or value == "" then
    error(name .. " is not set", 0)
  end
  return value
end

--- Helpers around `report` (the driver's table, written as JSON). `label` starts the line a
--- failure writes to stderr.
---@param report table
---@param label string
function M.new(report, label)
  local d = {}
  local out = os.getenv("SLM_NVIM_OUT")
  local main_co

  function d.write_report()
    local f = assert(io.open(assert(out, "SLM_NVIM_OUT is not set"), "w"))
    f:write(vim.json.encode(report))
    f:close()
  end

  --- Writes {ok = false, error = msg} and exits Neovim with status 1.
  function d.fail(msg)
    report.ok = false
    report.error = tostring(msg)
    pcall(d.write_report)
    io.stderr:write(label .. ": " .. tostring(msg) .. "\n")
    vim.cmd("cquit 1")
  end

  --- vim.notify's messages go to report[field] for each of `fields` (looked up at each message:
  --- a driver may empty them between steps).
  ---@param fields string[]
  function d.capture_notifications(fields)
    vim.notify = function(msg, level)
      for _, field in ipairs(fields) do
        table.insert(report[field], { msg = tostring(msg), level = level })
      end
    end
  end

  --- Runs the driver's set-up `configure` now; an error in it ends the run.
  ---@param configure fun()
  function d.configure(configure)
    local ok, err = xpcall(configure, debug.traceback)
    if not ok then
      d.fail(err)
    end
  end

  --- Calls require("slm").setup() with each of `options_list` (invalid ones) and returns, for
  --- each, what it returned and the first message it gave the user: { returned, message }.
  --- Needs capture_notifications({ "notifications", ... }).
  ---@param options_list table[]
  ---@return {returned: boolean, message: string|userdata}[]
  function d.invalid_setups(options_list)
    local out = {}
    for _, opts in ipairs(options_list) do
      report.notifications = {}
      local returned = require("slm").setup(opts)
      local message = report.notifications[1] and report.notifications[1].msg or vim.NIL
      table.insert(out, { returned = returned, message = message })
    end
    return out
  end

  local function resume(...)
    local ok, err = coroutine.resume(main_co, ...)
    if not ok then
      d.fail(debug.traceback(main_co, err))
    end
  end

  --- Waits `ms` in the main coroutine.
  function d.sleep(ms)
    vim.defer_fn(resume, ms)
    coroutine.yield()
  end

  --- Waits in the main coroutine until `cond()` returns a true value, and returns it; an error
  --- after `timeout_ms`.
  function d.wait_for(what, timeout_ms, cond, interval)
    local start = vim.uv.now()
    while true do
      local value = cond()
      if value then
        return value
      end
      if vim.uv.now() - start > timeout_ms then
        error("timed out after " .. timeout_ms .. " ms waiting for " .. what, 0)
      end
      d.sleep(interval or 10)
    end
  end

  --- Once Neovim has started, runs `main` as the main coroutine; fails with `timeout_message`
  --- after `timeout_ms` (a hard stop inside the test's own subprocess timeout).
  ---@param main fun()
  ---@param timeout_ms integer
  ---@param timeout_message string
  function d.start(main, timeout_ms, timeout_message)
    vim.api.nvim_create_autocmd("VimEnter", {
      once = true,
      callback = function()
        vim.defer_fn(function()
          d.fail(timeout_message)
        end, timeout_ms)
        main_co = coroutine.create(main)
        vim.schedule(resume)
      end,
    })
  end

  return d
end

return M
