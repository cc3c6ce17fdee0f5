-- Next-edit suggestions: after an edit (leaving Insert mode, a change in Normal mode, an accepted
-- completion) the plugin asks the server where the next edit is likely (slm/nextEdit, on a
-- debounce) and shows the answer as a diff at that place: the text it removes struck through
-- (SlmNextEditDelete), the text it adds inline or, over several lines, as virtual lines below
-- (SlmNextEditInsert); an edit out of view gets a hint at the end of the cursor's line
-- (SlmNextEditHint). The accept key (<Tab>) jumps there; pressed again, it applies the edit
-- (vim.lsp.util.apply_text_edits, in the client's position encoding). The dismiss key (<Esc>
-- in Normal mode), leaving Insert mode, another buffer or any edit hides it.
local buffer = require("slm.buffer")
local client = require("slm.client")
local config = require("slm.config")
local methods = require("slm.methods")
local request_slot = require("slm.request_slot")

local api = vim.api
local M = {}

M.ns = api.nvim_create_namespace("slm_next_edit")
M.hl_delete = "SlmNextEditDelete"
M.hl_insert = "SlmNextEditInsert"
M.hl_hint = "SlmNextEditHint"

--- Counters, for tests and curiosity.
M.stats = {
  requests = 0, -- slm/nextEdit requests sent
  cancelled = 0, -- requests cancelled because the buffer changed before the answer
  stale = 0, -- answers ignored because the buffer changed (or a newer request went out)
  empty = 0, -- answers without an edit (null, or one that changes nothing)
  invalid = 0, -- answers whose range is not in the buffer
  errors = 0, -- error answers
  shown = 0, -- edits shown
  jumped = 0, -- jumps to a shown edit
  applied = 0, -- edits applied
  dismissed = 0, -- edits hidden without being applied
}

---@class slm.NextEdit
---@field range lsp.Range   what to replace, in the client's position encoding
---@field newText string    the replacement
---@field cause string|nil  why the server suggests it (kept for the curious: M.get().cause)

---@class slm.NextEditShown
---@field bufnr integer
---@field tick integer            changedtick the edit belongs to
---@field edit slm.NextEdit
---@field encoding string         position encoding of edit.range
---@field hunk slm.NextEditHunk   the part that changes, in bytes
---@field hint integer|nil        the extmark that points to an edit out of view
---@field target integer[]|nil   where the jump put the cursor ({row, col}, 0-based; Normal mode
---                               cannot stand after the last character, so not always hunk.col)

---@class slm.NextEditHunk
---@field row integer        0-based start line of the text removed (or of the insertion point)
---@field col integer        its byte column
---@field end_row integer    end of the text removed (exclusive column); = row/col for a pure insertion
---@field end_col integer
---@field lines string[]     the text added, split in lines ({ "" }: nothing)

---@type slm.NextEditShown|nil
local shown = nil
--- The slm/nextEdit request in flight; its pending has the bufnr and tick it was asked for.
local requests = request_slot.new(M.stats)
local timer = nil
--- The buffer and changedtick the debounce timer will ask for.
---@type {bufnr: integer, tick: integer}|nil
local scheduled = nil
--- changedtick when Insert mode was entered: leaving it asks only if the text changed.
---@type table<integer, integer>
local insert_ticks = {}

local function options()
  local o = config.options.next_edit
  return type(o) == "table" and o or nil
end

--- Whether next edits are asked for (the option, and completions not turned off).
---@return boolean
function M.enabled()
  local o = options()
  return o ~= nil and o.enabled ~= false and require("slm").is_enabled()
end

local byte_col, get_line, display = buffer.byte_col, buffer.get_line, buffer.display

local function is_word_byte(byte)
  -- ASCII letters, digits, _ and any byte of a multi-byte character.
  return byte ~= nil and (byte >= 0x80 or string.char(byte):match("[%w_]") ~= nil)
end

--- Length of the common prefix of `a` and `b` in bytes, never splitting a UTF-8 character or a
--- word: a rename shows the whole old word struck through and the whole new one.
local function common_prefix(a, b)
  local n = math.min(#a, #b)
  local i = 0
  while i < n and a:byte(i + 1) == b:byte(i + 1) do
    i = i + 1
  end
  while i > 0 and is_word_byte(a:byte(i)) and (is_word_byte(a:byte(i + 1)) or is_word_byte(b:byte(i + 1))) do
    i = i - 1
  end
  return i
end

--- Length of the common suffix of `a` and `b` after their first `limit` bytes, on the same terms.
local function common_suffix(a, b, limit)
  local n = math.min(#a, #b) - limit
  local i = 0
  while i < n and a:byte(#a - i) == b:byte(#b - i) do
    i = i + 1
  end
  while
    i > 0
    and is_word_byte(a:byte(#a - i + 1))
    and (is_word_byte(a:byte(#a - i)) or is_word_byte(b:byte(#b - i)))
  do
    i = i - 1
  end
  return i
end

--- The part of `edit` that changes the buffer, in bytes: the range with the text that stays the
--- same at either end left out. nil when the range is not in the buffer or nothing changes.
---@param bufnr integer
---@param edit slm.NextEdit
---@param encoding string
---@return slm.NextEditHunk|nil
function M.hunk(bufnr, edit, encoding)
  local s, e = edit.range.start, edit.range["end"]
  local count = api.nvim_buf_line_count(bufnr)
  if s.line > e.line or (s.line == e.line and s.character > e.character) or s.line >= count then
    return nil
  end
  local row, end_row = s.line, e.line
  local col = byte_col(get_line(bufnr, row), s.character, encoding)
  local end_col
  if end_row >= count then -- the end of the document (a range may end on the line after the last)
    end_row = count - 1
    end_col = #get_line(bufnr, end_row)
  else
    end_col = byte_col(get_line(bufnr, end_row), e.character, encoding)
  end
  local old = table.concat(api.nvim_buf_get_text(bufnr, row, col, end_row, end_col, {}), "\n")
  local new = edit.newText
  if old == new then
    return nil
  end
  -- A range that starts or ends inside a word (a server's minimal replacement may turn `r` into
  -- `radius` by adding `adius`) is widened to the whole word on both sides, so that the word is
  -- what is shown replaced. The text added to both is the same: trimming it below undoes the
  -- widening wherever no word is cut.
  local first_line = get_line(bufnr, row)
  while col > 0 and is_word_byte(first_line:byte(col)) do
    old, new = first_line:sub(col, col) .. old, first_line:sub(col, col) .. new
    col = col - 1
  end
  local last_line = get_line(bufnr, end_row)
  while end_col < #last_line and is_word_byte(last_line:byte(end_col + 1)) do
    old, new = old .. last_line:sub(end_col + 1, end_col + 1), new .. last_line:sub(end_col + 1, end_col + 1)
    end_col = end_col + 1
  end
  -- Leave out what stays: the common beginning moves the start, the common end the end.
  local p = common_prefix(old, new)
  local q = common_suffix(old, new, p)
  local kept_before = old:sub(1, p)
  local before_lines = vim.split(kept_before, "\n", { plain = true })
  local start_row = row + #before_lines - 1
  local start_col = #before_lines == 1 and col + #kept_before or #before_lines[#before_lines]
  local removed = old:sub(p + 1, #old - q)
  local removed_lines = vim.split(removed, "\n", { plain = true })
  local stop_row = start_row + #removed_lines - 1
  local stop_col = #removed_lines == 1 and start_col + #removed or #removed_lines[#removed_lines]
  return {
    row = start_row,
    col = start_col,
    end_row = stop_row,
    end_col = stop_col,
    lines = vim.split(new:sub(p + 1, #new - q), "\n", { plain = true }),
  }
end

--- Draws `shown` with extmarks.
local function render(s)
  local h, bufnr = s.hunk, s.bufnr
  api.nvim_buf_clear_namespace(bufnr, M.ns, 0, -1)
  local removes = h.end_row > h.row or h.end_col > h.col
  if removes then
    api.nvim_buf_set_extmark(bufnr, M.ns, h.row, h.col, {
      end_row = h.end_row,
      end_col = h.end_col,
      hl_group = M.hl_delete,
      priority = 1100,
    })
  end
  local adds = #h.lines > 1 or h.lines[1] ~= ""
  if not adds then
    return
  end
  local virt_lines = {}
  local function add_virt_lines(lines)
    for _, line in ipairs(lines) do
      virt_lines[#virt_lines + 1] = { { display(line, bufnr), M.hl_insert } }
    end
  end
  if h.col == 0 and h.end_col == 0 and h.lines[#h.lines] == "" then
    -- Whole lines (the edit adds lines, or replaces lines with others): the new ones right below
    -- those struck through, in the place they will take.
    add_virt_lines(vim.list_slice(h.lines, 1, #h.lines - 1))
    if h.end_row < api.nvim_buf_line_count(bufnr) then
      api.nvim_buf_set_extmark(bufnr, M.ns, h.end_row, 0, {
        virt_lines = virt_lines,
        virt_lines_above = true,
        priority = 1100,
      })
    else
      api.nvim_buf_set_extmark(bufnr, M.ns, h.end_row - 1, 0, { virt_lines = virt_lines, priority = 1100 })
    end
    return
  end
  if #h.lines == 1 and h.end_row == h.row then
    -- One line in one line: the new text right after the struck-through old one.
    api.nvim_buf_set_extmark(bufnr, M.ns, h.end_row, h.end_col, {
      virt_text = { { display(h.lines[1], bufnr), M.hl_insert } },
      virt_text_pos = "inline",
      hl_mode = "combine",
      priority = 1100,
    })
    return
  end
  -- Parts of lines over several lines: the lines as they will read, below the last one touched.
  local head = get_line(bufnr, h.row):sub(1, h.col)
  local tail = get_line(bufnr, h.end_row):sub(h.end_col + 1)
  local new_lines = vim.deepcopy(h.lines)
  new_lines[1] = head .. new_lines[1]
  new_lines[#new_lines] = new_lines[#new_lines] .. tail
  add_virt_lines(new_lines)
  api.nvim_buf_set_extmark(bufnr, M.ns, h.end_row, 0, { virt_lines = virt_lines, priority = 1100 })
end

function M.is_visible()
  return shown ~= nil
end

--- The edit shown (nil when none is): { range, newText, cause }.
---@return slm.NextEdit|nil
function M.get()
  return shown and shown.edit or nil
end

local function stop_timer()
  scheduled = nil
  if timer then
    timer:stop()
  end
end

--- Cancels the request in flight and the one waiting for the debounce.
function M.cancel()
  stop_timer()
  requests:cancel()
end

--- Removes the edit shown (not counted as dismissed).
function M.clear()
  if shown then
    buffer.clear_marks(shown.bufnr, M.ns)
    shown = nil
  end
end

--- Hides the edit shown and cancels requests. Returns whether one was shown.
---@return boolean
function M.dismiss()
  M.cancel()
  if shown then
    M.stats.dismissed = M.stats.dismissed + 1
    M.clear()
    return true
  end
  return false
end

--- Shows `edit` (a slm/nextEdit result) in `bufnr` (also used by tests). Returns whether it is
--- shown: not when its range is outside the buffer or it changes nothing.
---@param bufnr integer
---@param edit slm.NextEdit
---@param encoding string|nil the position encoding of edit.range (default utf-16)
---@return boolean
function M.show(bufnr, edit, encoding)
  M.clear()
  bufnr = bufnr == 0 and api.nvim_get_current_buf() or bufnr
  encoding = encoding or "utf-16"
  local h = M.hunk(bufnr, edit, encoding)
  if not h then
    return false
  end
  shown = {
    bufnr = bufnr,
    tick = api.nvim_buf_get_changedtick(bufnr),
    edit = { range = vim.deepcopy(edit.range), newText = edit.newText, cause = edit.cause },
    encoding = encoding,
    hunk = h,
    target = nil,
  }
  M.stats.shown = M.stats.shown + 1
  render(shown)
  -- An edit out of view: a hint at the end of the cursor's line says where it is.
  if api.nvim_get_current_buf() == bufnr then
    local first, last = vim.fn.line("w0") - 1, vim.fn.line("w$") - 1
    if h.row < first or h.row > last then
      local row = api.nvim_win_get_cursor(0)[1] - 1
      local keys = options() and options().keymaps and options().keymaps.accept
      local key = type(keys) == "table" and keys[1] or keys
      local text = ("  %s next edit: line %d%s"):format(
        h.row < first and "↑" or "↓",
        h.row + 1,
        type(key) == "string" and (" (" .. key .. ")") or ""
      )
      shown.hint = api.nvim_buf_set_extmark(bufnr, M.ns, row, 0, {
        virt_text = { { text, M.hl_hint } },
        virt_text_pos = "eol",
        priority = 1100,
      })
    end
  end
  return true
end

--- A slm/nextEdit result as an edit, or nil when it is null or malformed.
---@return slm.NextEdit|nil
local function edit_from(result)
  if type(result) ~= "table" or type(result.newText) ~= "string" or type(result.range) ~= "table" then
    return nil
  end
  local s, e = result.range.start, result.range["end"]
  for _, p in ipairs({ s, e }) do
    if type(p) ~= "table" or type(p.line) ~= "number" or type(p.character) ~= "number" then
      return nil
    end
    if p.line < 0 or p.character < 0 then
      return nil
    end
  end
  local cause = result.cause
  return { range = result.range, newText = result.newText, cause = type(cause) == "string" and cause or nil }
end

--- Sends slm/nextEdit for the cursor of the current window now (cancelling the one in flight).
function M.request()
  stop_timer()
  if not M.enabled() then
    return
  end
  local bufnr = api.nvim_get_current_buf()
  local c = client.get(bufnr)
  if not c then
    return
  end
  local tick = api.nvim_buf_get_changedtick(bufnr)
  local position = vim.lsp.util.make_position_params(0, c.offset_encoding).position
  local params = { textDocument = { uri = vim.uri_from_bufnr(bufnr) }, position = position }
  local encoding = c.offset_encoding
  requests:send(c, methods.NEXT_EDIT_REQUEST, params, bufnr, function(result)
    if
      not api.nvim_buf_is_valid(bufnr)
      or api.nvim_get_current_buf() ~= bufnr
      or api.nvim_buf_get_changedtick(bufnr) ~= tick
      or not M.enabled()
    then
      M.stats.stale = M.stats.stale + 1
      return
    end
    local edit = edit_from(result)
    if not edit then
      M.stats.empty = M.stats.empty + 1
      return
    end
    if not M.show(bufnr, edit, encoding) then
      local s = edit.range.start
      if s.line >= api.nvim_buf_line_count(bufnr) then
        M.stats.invalid = M.stats.invalid + 1
      else
        M.stats.empty = M.stats.empty + 1
      end
    end
  end, { bufnr = bufnr, tick = tick })
end

--- Asks after the debounce (restarting it), for the current buffer as it is now.
function M.schedule()
  stop_timer()
  if not M.enabled() then
    return
  end
  local bufnr = api.nvim_get_current_buf()
  if not client.get(bufnr) then
    return
  end
  scheduled = { bufnr = bufnr, tick = api.nvim_buf_get_changedtick(bufnr) }
  timer = timer or vim.uv.new_timer()
  timer:start(
    options().debounce_ms,
    0,
    vim.schedule_wrap(function()
      local s = scheduled
      scheduled = nil
      -- Typing since (in Insert mode, which does not ask) or another buffer: not this request.
      if s and api.nvim_get_current_buf() == s.bufnr and api.nvim_buf_get_changedtick(s.bufnr) == s.tick then
        M.request()
      end
    end)
  )
end

--- The buffer changed (TextChanged, TextChangedI, TextChangedP). An edit shown for an older
--- text goes, and so does a request for it. In Normal mode the next edit is asked for after
--- the debounce; in Insert mode only once it is left (the ghost text serves typing).
---@param bufnr integer
---@param insert boolean
function M.on_text_changed(bufnr, insert)
  local tick = api.nvim_buf_get_changedtick(bufnr)
  if shown and (shown.bufnr ~= bufnr or shown.tick ~= tick) then
    M.stats.dismissed = M.stats.dismissed + 1
    M.clear()
  end
  local p = requests.pending
  if p and (p.bufnr ~= bufnr or p.tick ~= tick) then
    requests:cancel()
  end
  if scheduled and (scheduled.bufnr ~= bufnr or scheduled.tick ~= tick) then
    stop_timer()
  end
  if not insert and not requests.pending and not scheduled then
    M.schedule()
  end
end

function M.on_insert_enter(bufnr)
  insert_ticks[bufnr] = api.nvim_buf_get_changedtick(bufnr)
end

--- Leaving Insert mode dismisses the edit shown; if the text changed there, the next one is
--- asked for.
function M.on_insert_leave(bufnr)
  local entered = insert_ticks[bufnr]
  insert_ticks[bufnr] = nil
  M.dismiss()
  if entered ~= nil and entered ~= api.nvim_buf_get_changedtick(bufnr) then
    M.schedule()
  end
end

--- After a completion was accepted: the next edit is asked for after the debounce.
function M.on_accepted()
  M.schedule()
end

--- The accept key: jumps to the edit shown (the start of what it changes); when the cursor is
--- there already (the key was pressed twice), applies it. Returns false when there is nothing
--- to do (the key then does what it did before).
---@return boolean
function M.accept()
  local s = shown
  if not s then
    return false
  end
  if api.nvim_get_current_buf() ~= s.bufnr or api.nvim_buf_get_changedtick(s.bufnr) ~= s.tick then
    M.dismiss()
    return false
  end
  local pos = api.nvim_win_get_cursor(0)
  local row, col = pos[1] - 1, pos[2]
  local at_start = row == s.hunk.row and col == s.hunk.col
  local at_target = s.target ~= nil and row == s.target[1] and col == s.target[2]
  if not (at_start or at_target) then
    if api.nvim_get_mode().mode:sub(1, 1) ~= "i" then
      vim.cmd("normal! m'") -- '' and <C-o> go back to where the jump started
    end
    api.nvim_win_set_cursor(0, { s.hunk.row + 1, s.hunk.col })
    local now = api.nvim_win_get_cursor(0)
    s.target = { now[1] - 1, now[2] }
    if s.hint then
      pcall(api.nvim_buf_del_extmark, s.bufnr, M.ns, s.hint)
      s.hint = nil
    end
    M.stats.jumped = M.stats.jumped + 1
    return true
  end
  return M.apply()
end

--- Applies the edit shown and puts the cursor at the end of the text it added.
---@return boolean applied
function M.apply()
  local s = shown
  if not s then
    return false
  end
  if not api.nvim_buf_is_valid(s.bufnr) or api.nvim_buf_get_changedtick(s.bufnr) ~= s.tick then
    M.dismiss()
    return false
  end
  M.cancel()
  M.clear()
  local h = s.hunk
  vim.lsp.util.apply_text_edits({ { range = s.edit.range, newText = s.edit.newText } }, s.bufnr, s.encoding)
  M.stats.applied = M.stats.applied + 1
  if api.nvim_get_current_buf() == s.bufnr then
    -- The cursor goes to the end of the text added (of its last line, when it ends with one).
    local lines = h.lines
    if #lines > 1 and lines[#lines] == "" then
      lines = vim.list_slice(lines, 1, #lines - 1)
    end
    local end_row = h.row + #lines - 1
    local end_col = #lines == 1 and h.col + #lines[1] or #lines[#lines]
    local added = #lines > 1 or lines[1] ~= ""
    -- Normal mode: on the last character added (it cannot stand after the end of a line).
    if added and end_col > 0 and api.nvim_get_mode().mode:sub(1, 1) ~= "i" then
      end_col = end_col - 1
    end
    pcall(api.nvim_win_set_cursor, 0, { end_row + 1, end_col })
  end
  return true
end

--- Clears everything (BufLeave, disabling, the server exiting).
function M.reset()
  M.cancel()
  M.clear()
end

--- Defines the highlight groups unless the user did: removed text struck through in the colour
--- of DiffDelete, added text as DiffAdd.
function M.set_highlights()
  local ok, removed = pcall(api.nvim_get_hl, 0, { name = "DiffDelete", link = false })
  local fg = ok and type(removed) == "table" and (removed.fg or removed.bg) or nil
  api.nvim_set_hl(0, M.hl_delete, { fg = fg, strikethrough = true, default = true })
  api.nvim_set_hl(0, M.hl_insert, { link = "DiffAdd", default = true })
  api.nvim_set_hl(0, M.hl_hint, { link = "Comment", default = true })
end

return M
