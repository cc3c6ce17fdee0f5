-- Ghost text: textDocument/inlineCompletion on a debounce in insert mode, shown with extmarks
-- (inline virtual text for the first line, virtual lines for the rest), accepted whole, by word
-- or by line, dismissed, and kept while the user types what it shows. An item whose range is
-- away from the cursor (the server's next edit) goes to slm.next_edit. Each accept tells the
-- server (slm/accepted), which computes the suggestion at the new cursor at once.
local buffer = require("slm.buffer")
local client = require("slm.client")
local config = require("slm.config")
local methods = require("slm.methods")
local request_slot = require("slm.request_slot")

local api = vim.api
local M = {}

M.ns = api.nvim_create_namespace("slm_ghost_text")
M.hl_group = "SlmGhostText"

--- Counters, for tests and curiosity.
M.stats = {
  requests = 0, -- inlineCompletion requests sent
  cancelled = 0, -- requests cancelled because the text or cursor changed before the answer
  stale = 0, -- answers ignored because they no longer matched the buffer
  shown = 0, -- suggestions shown
  empty = 0, -- answers without a suggestion
  errors = 0, -- error answers
  accepted = 0, -- suggestions accepted whole (or to their end)
  accept_notifications = 0, -- slm/accepted notifications sent
  partial = 0, -- word / line accepts
  typed_through = 0, -- characters typed that matched the ghost text
}

---@class slm.Ghost
---@field bufnr integer
---@field row integer       0-based line of the cursor
---@field col integer       byte column of the cursor
---@field text string       what is still to be inserted (may contain newlines)
---@field before string     the cursor line before the cursor
---@field after string      the cursor line after the cursor
---@field replace integer   bytes after the cursor that a full accept replaces (item range end)
---@field mark integer|nil  extmark id

---@type slm.Ghost|nil
local ghost = nil
--- The inlineCompletion request in flight.
local requests = request_slot.new(M.stats)
local timer = nil
--- Where a whole accept left the cursor: the next suggestion is asked for at once there (the
--- server computed it while the accepted one was shown), without the debounce.
---@type {bufnr: integer, tick: integer, row: integer, col: integer}|nil
local accepted_at = nil

local function cursor()
  local pos = api.nvim_win_get_cursor(0)
  return pos[1] - 1, pos[2]
end

local function in_insert_mode()
  return api.nvim_get_mode().mode:sub(1, 1) == "i"
end

local get_line, byte_col = buffer.get_line, buffer.byte_col

function M.is_visible()
  return ghost ~= nil
end

--- The ghost text still to be inserted (nil when none is shown).
---@return string|nil
function M.get_text()
  return ghost and ghost.text or nil
end

local function stop_timer()
  if timer then
    timer:stop()
  end
end

--- Cancels the request in flight, if any.
function M.cancel()
  stop_timer()
  requests:cancel()
end

--- Removes the ghost text.
function M.clear()
  if ghost then
    buffer.clear_marks(ghost.bufnr, M.ns)
    ghost = nil
  end
end

--- Hides the ghost text and cancels requests; no new request until the next edit.
function M.dismiss()
  M.cancel()
  M.clear()
end

local function render()
  local g = assert(ghost)
  local lines = vim.split(g.text, "\n", { plain = true })
  local opts = {
    id = g.mark,
    hl_mode = "combine",
    priority = 1000,
  }
  if lines[1] ~= "" then
    opts.virt_text = { { buffer.display(lines[1], g.bufnr), M.hl_group } }
    opts.virt_text_pos = "inline"
  end
  if #lines > 1 then
    local virt_lines = {}
    for i = 2, #lines do
      virt_lines[#virt_lines + 1] = { { buffer.display(lines[i], g.bufnr), M.hl_group } }
    end
    opts.virt_lines = virt_lines
  end
  g.mark = api.nvim_buf_set_extmark(g.bufnr, M.ns, g.row, g.col, opts)
end

--- Shows `text` as ghost text at the cursor of the current window (also used by tests).
---@param text string
---@param replace integer|nil bytes after the cursor that accepting replaces
function M.show(text, replace)
  M.clear()
  if text == "" then
    return
  end
  local bufnr = api.nvim_get_current_buf()
  local row, col = cursor()
  local line = get_line(bufnr, row)
  ghost = {
    bufnr = bufnr,
    row = row,
    col = col,
    text = text,
    before = line:sub(1, col),
    after = line:sub(col + 1),
    replace = replace or 0,
  }
  M.stats.shown = M.stats.shown + 1
  render()
end

--- The text to show for an inline completion answer, or nil. Handles an item range that
--- starts before the cursor (its text up to the cursor must be what was typed) or ends after it.
local function suggestion_from(result, params, encoding, bufnr)
  local items = type(result) == "table" and (result.items or result) or {}
  local item = type(items) == "table" and items[1] or nil
  if type(item) ~= "table" then
    return nil
  end
  local text = item.insertText
  if type(text) == "table" then
    text = text.value -- StringValue (snippet): shown and inserted as plain text
  end
  if type(text) ~= "string" or text == "" then
    return nil
  end
  local replace = 0
  local range = type(item.range) == "table" and item.range or nil
  if range then
    local pos = params.position
    local s, e = range.start, range["end"]
    if s.line ~= pos.line or e.line ~= pos.line or s.character > pos.character then
      return nil -- not at the cursor: ignore
    end
    local row, col = cursor()
    local line = get_line(bufnr, row)
    if s.character < pos.character then
      local typed = line:sub(byte_col(line, s.character, encoding) + 1, col)
      if text:sub(1, #typed) ~= typed then
        return nil
      end
      text = text:sub(#typed + 1)
    end
    if e.character > pos.character then
      replace = byte_col(line, e.character, encoding) - col
    end
  end
  if text == "" then
    return nil
  end
  return text, replace
end

--- The first item of an inline completion answer whose range is not at the cursor (another
--- line, or it starts after the cursor): a next edit, or nil.
---@return slm.NextEdit|nil
local function ranged_item(result, params)
  local items = type(result) == "table" and (result.items or result) or {}
  local item = type(items) == "table" and items[1] or nil
  if type(item) ~= "table" or type(item.insertText) ~= "string" or type(item.range) ~= "table" then
    return nil
  end
  local s, e, pos = item.range.start, item.range["end"], params.position
  if type(s) ~= "table" or type(e) ~= "table" then
    return nil
  end
  if s.line ~= pos.line or e.line ~= pos.line or s.character > pos.character then
    return { range = item.range, newText = item.insertText, cause = "inline completion" }
  end
  return nil
end

--- Handles an inline completion answer for `params` (the request made at the cursor, which has
--- not moved since): shows its text as ghost text; an item whose range is away from the cursor
--- (the server's next edit) is shown as a next edit instead. Returns what it did: "ghost",
--- "next_edit" or nil.
---@param result any
---@param params table the request's params
---@param encoding string the client's position encoding
---@param bufnr integer
---@return string|nil
function M.on_result(result, params, encoding, bufnr)
  local text, replace = suggestion_from(result, params, encoding, bufnr)
  if text then
    M.show(text, replace)
    return "ghost"
  end
  M.stats.empty = M.stats.empty + 1
  local edit = ranged_item(result, params)
  local next_edit = require("slm.next_edit")
  if edit and next_edit.enabled() and next_edit.show(bufnr, edit, encoding) then
    return "next_edit"
  end
  return nil
end

--- Sends textDocument/inlineCompletion for the cursor now (cancelling the one in flight).
---@param trigger_kind integer|nil 1: invoked, 2 (default): automatic
function M.request(trigger_kind)
  stop_timer()
  if not require("slm").is_enabled() or not in_insert_mode() then
    return
  end
  local bufnr = api.nvim_get_current_buf()
  local c = client.get(bufnr)
  if not c then
    return
  end
  local tick = api.nvim_buf_get_changedtick(bufnr)
  local row, col = cursor()
  local params = vim.lsp.util.make_position_params(0, c.offset_encoding)
  params.context = { triggerKind = trigger_kind or 2 }
  requests:send(c, "textDocument/inlineCompletion", params, bufnr, function(result)
    local r, cl = cursor()
    if
      api.nvim_get_current_buf() ~= bufnr
      or api.nvim_buf_get_changedtick(bufnr) ~= tick
      or r ~= row
      or cl ~= col
      or not in_insert_mode()
      or not require("slm").is_enabled()
    then
      M.stats.stale = M.stats.stale + 1
      return
    end
    M.on_result(result, params, c.offset_encoding, bufnr)
  end)
end

--- Requests after the debounce delay (restarting it).
function M.schedule()
  stop_timer()
  if not require("slm").is_enabled() then
    return
  end
  timer = timer or vim.uv.new_timer()
  timer:start(
    config.options.debounce_ms,
    0,
    vim.schedule_wrap(function()
      M.request(2)
    end)
  )
end

--- After the text or the cursor changed in insert mode: keeps the ghost text if the user typed
--- its beginning (showing the rest), else clears it, cancels the request in flight and
--- requests again after the debounce.
function M.on_change()
  local bufnr = api.nvim_get_current_buf()
  local row, col = cursor()
  local a = accepted_at
  if a and not ghost then
    if a.bufnr == bufnr and a.tick == api.nvim_buf_get_changedtick(bufnr) and a.row == row and a.col == col then
      if not requests.pending then -- TextChangedI asks; the CursorMovedI that follows leaves that request be
        M.request(2)
      end
      return
    end
    accepted_at = nil
  end
  if ghost then
    local g = ghost
    local line = get_line(bufnr, row)
    local k = col - g.col
    local typed = g.text:sub(1, math.max(k, 0))
    if
      g.bufnr == bufnr
      and g.row == row
      and k >= 0
      and not typed:find("\n", 1, true)
      and line == g.before .. typed .. g.after
    then
      if k == 0 then
        return -- nothing changed for the ghost text (e.g. CursorMovedI after TextChangedI)
      end
      M.stats.typed_through = M.stats.typed_through + k
      g.text = g.text:sub(k + 1)
      g.col = col
      g.before = line:sub(1, col)
      if g.text ~= "" then
        render()
        return
      end
    end
    M.clear()
  end
  M.cancel()
  if config.options.auto_trigger then
    M.schedule()
  end
end

--- Tells the server that `text` was accepted and the cursor is now after it (current window).
--- No version: the server waits until the document has `text` before the cursor (Neovim sends
--- didChange after its own debounce, so this may arrive first).
local function notify_accepted(bufnr, text)
  local c = client.get(bufnr)
  if not c then
    return
  end
  local position = vim.lsp.util.make_position_params(0, c.offset_encoding).position
  local params = { uri = vim.uri_from_bufnr(bufnr), position = position, text = text }
  if client.notify(c, methods.ACCEPTED_NOTIFICATION, params) then
    M.stats.accept_notifications = M.stats.accept_notifications + 1
  end
end

--- Inserts part of the ghost text at the cursor and moves the cursor to its end.
---@param kind "all"|"word"|"line"
---@return boolean accepted
function M.accept(kind)
  kind = kind or "all"
  if not ghost then
    return false
  end
  local g = ghost
  local row, col = cursor()
  if api.nvim_get_current_buf() ~= g.bufnr or row ~= g.row or col ~= g.col then
    M.clear()
    return false
  end
  local piece = g.text
  if kind == "word" then
    piece = g.text:match("^%s*[%w_]+") or g.text:match("^%s*[^%w_%s]+") or g.text:match("^%s+") or g.text
  elseif kind == "line" then
    local first = g.text:match("^[^\n]*")
    -- At the end of the first line: the line break and the next line.
    piece = first ~= "" and first or g.text:match("^\n[^\n]*")
  end
  local rest = g.text:sub(#piece + 1)
  local replace = rest == "" and g.replace or 0
  local lines = vim.split(piece, "\n", { plain = true })
  M.cancel()
  api.nvim_buf_set_text(g.bufnr, row, col, row, col + replace, lines)
  local new_row = row + #lines - 1
  local new_col = #lines == 1 and col + #lines[1] or #lines[#lines]
  api.nvim_win_set_cursor(0, { new_row + 1, new_col })
  notify_accepted(g.bufnr, piece)
  if rest == "" then
    M.stats.accepted = M.stats.accepted + 1
    M.clear()
    if config.options.auto_trigger then
      accepted_at = { bufnr = g.bufnr, tick = api.nvim_buf_get_changedtick(g.bufnr), row = new_row, col = new_col }
    end
    require("slm.next_edit").on_accepted()
  else
    M.stats.partial = M.stats.partial + 1
    local line = get_line(g.bufnr, new_row)
    g.row, g.col, g.text = new_row, new_col, rest
    g.before, g.after = line:sub(1, new_col), line:sub(new_col + 1)
    render()
  end
  return true
end

function M.accept_word()
  return M.accept("word")
end

function M.accept_line()
  return M.accept("line")
end

--- Clears everything (InsertLeave, BufLeave, disabling).
function M.reset()
  accepted_at = nil
  M.cancel()
  M.clear()
end

return M
