-- A buffer's text as the ghost text and the next edits read and draw it: lines, LSP positions
-- as byte columns, tabs as the screen shows them.
local api = vim.api

local M = {}

--- Line `row` (0-based) of `bufnr`; "" past the end.
---@param bufnr integer
---@param row integer
---@return string
function M.get_line(bufnr, row)
  return api.nvim_buf_get_lines(bufnr, row, row + 1, false)[1] or ""
end

--- Byte column of LSP character `index` in `line` for the position encoding (the end of the
--- line when the index is past it).
---@param line string
---@param index integer
---@param encoding string "utf-8", "utf-16" or "utf-32"
---@return integer
function M.byte_col(line, index, encoding)
  if encoding == "utf-8" then
    return math.min(index, #line)
  end
  local ok, byte
  if vim.fn.has("nvim-0.11") == 1 then
    ok, byte = pcall(vim.str_byteindex, line, encoding, index, false)
  else
    ok, byte = pcall(vim.str_byteindex, line, index, encoding == "utf-16")
  end
  return ok and byte or #line
end

--- `text` with its tabs as spaces ('tabstop' of `bufnr`): virtual text does not expand tabs.
---@param text string
---@param bufnr integer
---@return string
function M.display(text, bufnr)
  local ts = vim.bo[bufnr].tabstop
  return (text:gsub("\t", string.rep(" ", ts > 0 and ts or 8)))
end

--- Removes the extmarks of namespace `ns` from `bufnr`, unless the buffer is gone.
---@param bufnr integer
---@param ns integer
function M.clear_marks(bufnr, ns)
  if api.nvim_buf_is_valid(bufnr) then
    api.nvim_buf_clear_namespace(bufnr, ns, 0, -1)
  end
end

return M
