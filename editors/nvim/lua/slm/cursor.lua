-- Where the cursor came to rest (slm/cursor): on entering a buffer or window, on focus, and once
-- the cursor has stayed put for REST_MS after moving, the plugin tells the server the buffer and
-- position. The server warms the completion prompt there when it is another document or a jump
-- (it applies the distance), so the pause in which the user reads before typing evaluates the
-- prompt and the first suggestion after a jump or a buffer switch is fast. Here only repeats are
-- left out: a rest on the buffer and line last sent (to the same server) sends nothing. One
-- notification, no answer, nothing drawn: never in the way.
local client = require("slm.client")
local methods = require("slm.methods")

local api = vim.api
local M = {}

--- How long the cursor stays put before the server hears of it: holding j or scrolling sends
--- nothing until it stops, and a glance longer than this is already worth warming for.
M.REST_MS = 300

--- Counters, for tests and curiosity.
M.stats = {
  sent = 0, -- slm/cursor notifications sent
  repeated = 0, -- rests on the buffer and line last sent: not sent
}

---@type uv.uv_timer_t|nil
local timer = nil
--- The last place sent: the server (client id), the buffer and the 0-based line.
---@type {client_id: integer, bufnr: integer, line: integer}|nil
local last_sent = nil

--- Sends slm/cursor for the current window's cursor now, unless completions are off, the buffer
--- has no initialized slm-lsp client, or it rests where the last one was sent. Returns whether it
--- was sent.
---@return boolean
function M.send()
  if not require("slm").is_enabled() then
    return false
  end
  local bufnr = api.nvim_get_current_buf()
  local c = client.get(bufnr)
  -- Before `initialized` the server cannot take it (and has not been sent the document).
  if not c or not c.initialized then
    return false
  end
  -- { textDocument = { uri }, position }: the notification's params as they are.
  local params = vim.lsp.util.make_position_params(0, c.offset_encoding)
  local line = params.position.line
  local l = last_sent
  if l and l.client_id == c.id and l.bufnr == bufnr and l.line == line then
    M.stats.repeated = M.stats.repeated + 1
    return false
  end
  if not client.notify(c, methods.CURSOR_NOTIFICATION, params) then
    return false
  end
  last_sent = { client_id = c.id, bufnr = bufnr, line = line }
  M.stats.sent = M.stats.sent + 1
  return true
end

--- The cursor moved, or another buffer, window or the editor got the focus: sends once it has
--- rested REST_MS (each call restarts the wait), for wherever the cursor is then.
function M.schedule()
  timer = timer or vim.uv.new_timer()
  timer:start(M.REST_MS, 0, vim.schedule_wrap(M.send))
end

--- Stops the wait (completions turned off).
function M.cancel()
  if timer then
    timer:stop()
  end
end

return M
