-- When to restart a server that died on its own (a model that trips a llama.cpp assertion, a
-- segfault, the OOM killer). The VS Code extension applies the same policy
-- (editors/vscode/src/restartPolicy.ts).
--
-- - Each crash in a row waits twice as long before the restart: 0.5 s, 1 s, 2 s ... at most 30 s.
-- - A server that stayed up for a minute before it died starts the series again at 0.5 s.
-- - More than 5 crashes within 3 minutes: no more restarts; the user reads :LspLog and runs
--   :SlmRestart (which starts a fresh series).
--
-- Pure: the caller passes the clock (vim.uv.now()) in; slm.client schedules the restarts.
local M = {}

---@class slm.RestartOptions
---@field initial_delay_ms number  delay before the first restart of a series
---@field max_delay_ms number      longest delay
---@field stable_after_ms number   a server up this long before it died starts a new series
---@field max_crashes integer      crashes allowed within window_ms; one more and no restart
---@field window_ms number         the window crashes are counted over

---@type slm.RestartOptions
M.defaults = {
  initial_delay_ms = 500,
  max_delay_ms = 30000,
  stable_after_ms = 60000,
  max_crashes = 5,
  window_ms = 3 * 60000,
}

---@class slm.RestartDecision
---@field restart boolean
---@field delay_ms number|nil  when restart is true
---@field crashes integer      crashes within the window, this one included

---@class slm.RestartPolicy
---@field opts slm.RestartOptions
---@field crash_times number[]  times of the crashes within the window, oldest first
---@field in_a_row integer      crashes since the server last stayed up for stable_after_ms
---@field started_at number|nil
local Policy = {}
Policy.__index = Policy

---@param opts slm.RestartOptions|nil  missing fields take the defaults
---@return slm.RestartPolicy
function M.new(opts)
  local self = setmetatable({}, Policy)
  self.opts = vim.tbl_extend("force", M.defaults, opts or {})
  self:reset()
  return self
end

--- The server was (re)started at `now` (ms).
---@param now number
function Policy:started(now)
  self.started_at = now
end

--- The server died at `now` (ms) without being asked to stop: restart it, and when?
---@param now number
---@return slm.RestartDecision
function Policy:crashed(now)
  local o = self.opts
  if self.started_at and now - self.started_at >= o.stable_after_ms then
    self.in_a_row = 0
  end
  self.started_at = nil
  local kept = {}
  for _, t in ipairs(self.crash_times) do
    if now - t < o.window_ms then
      kept[#kept + 1] = t
    end
  end
  kept[#kept + 1] = now
  self.crash_times = kept
  if #kept > o.max_crashes then
    return { restart = false, crashes = #kept }
  end
  self.in_a_row = self.in_a_row + 1
  local delay = math.min(o.max_delay_ms, o.initial_delay_ms * 2 ^ (self.in_a_row - 1))
  return { restart = true, delay_ms = delay, crashes = #kept }
end

--- A restart the user asked for: forget the crashes.
function Policy:reset()
  self.crash_times = {}
  self.in_a_row = 0
  self.started_at = nil
end

--- "0.5 s", "2 s", "3 min".
---@param ms number
---@return string
function M.format_delay(ms)
  if ms >= 60000 and ms % 60000 == 0 then
    return ("%d min"):format(ms / 60000)
  end
  return ("%g s"):format(ms / 1000)
end

return M
