-- The one request a feature keeps in flight (the ghost text's inlineCompletion, the next edit's
-- slm/nextEdit): sending a new one cancels it, and an answer that comes after its request was
-- cancelled or superseded is counted stale and dropped.
local client = require("slm.client")

local M = {}

---@class slm.RequestSlot
---@field stats table        the feature's counters: requests, cancelled, stale, errors
---@field pending table|nil  the request in flight: {client, id, seq} and the fields given to send()
---@field seq integer        number of the latest request sent
local Slot = {}
Slot.__index = Slot

--- A slot that counts in `stats` (a table with requests, cancelled, stale and errors).
---@param stats table
---@return slm.RequestSlot
function M.new(stats)
  return setmetatable({ stats = stats, pending = nil, seq = 0 }, Slot)
end

--- Cancels the request in flight, if any.
function Slot:cancel()
  local p = self.pending
  if p then
    self.pending = nil
    self.stats.cancelled = self.stats.cancelled + 1
    pcall(client.cancel, p.client, p.id)
  end
end

--- Sends `method` to `c` in place of the request in flight. `on_answer(result)` runs for a
--- successful answer while its request is still the one in flight; error answers are counted.
--- `fields` (what the request was for) are kept in `self.pending`.
---@param c vim.lsp.Client
---@param method string
---@param params table
---@param bufnr integer
---@param on_answer fun(result: any)
---@param fields table|nil
function Slot:send(c, method, params, bufnr, on_answer, fields)
  self:cancel()
  self.seq = self.seq + 1
  local my_seq = self.seq
  local id = client.request(c, method, params, function(err, result)
    if not self.pending or self.pending.seq ~= my_seq then
      self.stats.stale = self.stats.stale + 1 -- superseded (cancelled, or a newer request went out)
      return
    end
    self.pending = nil
    if err then
      self.stats.errors = self.stats.errors + 1
      return
    end
    on_answer(result)
  end, bufnr)
  if id then
    self.stats.requests = self.stats.requests + 1
    local p = fields or {}
    p.client, p.id, p.seq = c, id, my_seq
    self.pending = p
  end
end

return M
