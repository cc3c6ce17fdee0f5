-- Insert-mode keys. Each acts only while ghost text is shown; otherwise the key does what it
-- did before (the mapping it replaced, or the key itself: <Tab> still inserts a tab).
-- The next-edit keys (next_edit.keymaps) act only while a next edit is shown: `accept` in Normal
-- and Insert mode (in Insert mode the ghost text comes first when both are shown: one <Tab>
-- accepts the ghost text), `dismiss` in Normal mode.
local next_edit = require("slm.next_edit")
local suggestion = require("slm.suggestion")

local api = vim.api
local M = {}

local DESC = "[slm] "

---@type {mode: string, lhs: string}[] set by us, for M.clear()
local mapped = {}

local function termcodes(keys)
  return api.nvim_replace_termcodes(keys, true, false, true)
end

local function feed(keys, remap)
  -- "i": before any typeahead that is already waiting, so fast typing keeps its order.
  api.nvim_feedkeys(keys, remap and "im" or "in", false)
end

--- What the key did before we mapped it (in `mode`).
local function fallback_for(lhs, mode)
  local prev = vim.fn.maparg(lhs, mode, false, true)
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

local function as_list(keys)
  if type(keys) == "string" then
    return { keys }
  end
  return type(keys) == "table" and keys or {}
end

--- Sets the keys of the `keymaps` option and the `next_edit.keymaps` option.
---@param keymaps slm.Keymaps|false
---@param next_edit_keymaps slm.NextEditKeymaps|false|nil
function M.setup(keymaps, next_edit_keymaps)
  -- Insert mode: per key, the ghost-text actions it has (in order), then the next edit's accept.
  local insert = {} ---@type table<string, string[]>
  local order = {} ---@type string[]
  local function add(lhs, name)
    if not insert[lhs] then
      insert[lhs] = {}
      order[#order + 1] = lhs
    end
    table.insert(insert[lhs], name)
  end
  for _, name in ipairs({ "accept", "accept_word", "accept_line", "dismiss", "suggest" }) do
    for _, lhs in ipairs(as_list(keymaps and keymaps[name])) do
      add(lhs, name)
    end
  end
  for _, lhs in ipairs(as_list(next_edit_keymaps and next_edit_keymaps.accept)) do
    add(lhs, "next_edit")
  end
  for _, lhs in ipairs(order) do
    local names = insert[lhs]
    if vim.tbl_contains(names, "suggest") then
      vim.keymap.set("i", lhs, function()
        suggestion.request(1)
      end, { desc = DESC .. "ask for a suggestion now", silent = true })
    else
      local fallback = fallback_for(lhs, "i")
      local descs = {}
      for _, name in ipairs(names) do
        descs[#descs + 1] = name == "next_edit" and "jump to or apply the next edit" or actions[name][2]
      end
      vim.keymap.set("i", lhs, function()
        for _, name in ipairs(names) do
          if name == "next_edit" then
            if next_edit.is_visible() and next_edit.accept() then
              return
            end
          elseif suggestion.is_visible() and actions[name][1]() then
            return
          end
        end
        fallback()
      end, { desc = DESC .. table.concat(descs, ", else "), silent = true })
    end
    mapped[#mapped + 1] = { mode = "i", lhs = lhs }
  end
  -- Normal mode: the next edit's keys only.
  local normal = {
    accept = { next_edit.accept, "jump to or apply the next edit" },
    dismiss = { next_edit.dismiss, "dismiss the next edit" },
  }
  for _, name in ipairs({ "accept", "dismiss" }) do
    for _, lhs in ipairs(as_list(next_edit_keymaps and next_edit_keymaps[name])) do
      local action, desc = normal[name][1], normal[name][2]
      local fallback = fallback_for(lhs, "n")
      vim.keymap.set("n", lhs, function()
        if not (next_edit.is_visible() and action()) then
          fallback()
        end
      end, { desc = DESC .. desc, silent = true })
      mapped[#mapped + 1] = { mode = "n", lhs = lhs }
    end
  end
end

--- Removes the keys set by M.setup().
function M.clear()
  for _, m in ipairs(mapped) do
    pcall(vim.keymap.del, m.mode, m.lhs)
  end
  mapped = {}
end

return M
