-- Insert-mode keys. Each acts only while ghost text is shown; otherwise the key does what it
-- did before (the mapping it replaced, or the key itself: <Tab> still inserts a tab).
local suggestion = require("slm.suggestion")

local api = vim.api
local M = {}

local DESC = "[slm] "

---@type string[] lhs set by us, for M.clear()
local mapped = {}

local function termcodes(keys)
  return api.nvim_replace_termcodes(keys, true, false, true)
end

local function feed(keys, remap)
  -- "i": before any typeahead that is already waiting, so fast typing keeps its order.
  api.nvim_feedkeys(keys, remap and "im" or "in", false)
end

--- What the key did before we mapped it.
local function fallback_for(lhs)
  local prev = vim.fn.maparg(lhs, "i", false, true)
  local ours = type(prev) == "table" and type(prev.desc) == "string" and prev.desc:sub(1, #DESC) == DESC
  if type(prev) ~= "table" or vim.tbl_isempty(prev) or prev.buffer == 1 or ours then
    local keys = termcodes(lhs)
    return function()
      feed(keys, false)
    end
  end
  local remap = prev.noremap ~= 1
  if prev.callback then
    return function()
      local out = prev.callback()
      if prev.expr == 1 and type(out) == "string" and out ~= "" then
        feed(prev.replace_keycodes == 1 and termcodes(out) or out, remap)
      end
    end
  end
  local rhs = prev.rhs or ""
  return function()
    local keys = prev.expr == 1 and vim.fn.eval(rhs) or rhs
    if type(keys) == "string" and keys ~= "" then
      feed(termcodes(keys), remap)
    end
  end
end

local actions = {
  accept = { suggestion.accept, "accept the suggestion" },
  accept_word = { suggestion.accept_word, "accept the next word of the suggestion" },
  accept_line = { suggestion.accept_line, "accept the next line of the suggestion" },
  dismiss = {
    function()
      suggestion.dismiss()
      return true
    end,
    "dismiss the suggestion",
  },
}

local function set(lhs, name)
  if name == "suggest" then
    vim.keymap.set("i", lhs, function()
      suggestion.request(1)
    end, { desc = DESC .. "ask for a suggestion now", silent = true })
  else
    local action, desc = actions[name][1], actions[name][2]
    local fallback = fallback_for(lhs)
    vim.keymap.set("i", lhs, function()
      if not (suggestion.is_visible() and action()) then
        fallback()
      end
    end, { desc = DESC .. desc, silent = true })
  end
  mapped[#mapped + 1] = lhs
end

--- Sets the insert-mode keys from the `keymaps` option.
---@param keymaps slm.Keymaps|false
function M.setup(keymaps)
  if not keymaps then
    return
  end
  for _, name in ipairs({ "accept", "accept_word", "accept_line", "dismiss", "suggest" }) do
    local keys = keymaps[name]
    if type(keys) == "string" then
      keys = { keys }
    end
    for _, lhs in ipairs(keys or {}) do
      set(lhs, name)
    end
  end
end

--- Removes the keys set by M.setup().
function M.clear()
  for _, lhs in ipairs(mapped) do
    pcall(vim.keymap.del, "i", lhs)
  end
  mapped = {}
end

return M
