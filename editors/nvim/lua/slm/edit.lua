-- Edits of a selection by the model (the server's code actions, slm_lsp/features/code_action.py).
--
-- vim.lsp.buf.code_action() lists them (Add docstring, Add type hints, Simplify, Fix: ...) and
-- Neovim resolves the one picked: the model runs then. "Rewrite selection…" carries the command
-- slm.rewriteSelection, handled here: it asks for the instruction with vim.ui.input and sends
-- slm.edit, whose edit the server applies with workspace/applyEdit.
--
--   :'<,'>SlmEdit use a list comprehension      rewrite the lines as the instruction says
--   :'<,'>SlmEdit                               ask for the instruction first
local methods = require("slm.methods")

local M = {}

local function notify(msg, level)
  vim.notify("[slm] " .. msg, level or vim.log.levels.INFO)
end

--- Sends slm.edit with `args` ({ uri, range, action, instruction }) and reports its outcome.
---@param args table
function M.send(args)
  local sent = require("slm.client").execute(methods.COMMAND_EDIT, { args }, function(err, result)
    if err then
      notify("edit failed: " .. tostring(err.message or err), vim.log.levels.ERROR)
    else
      -- { applied, message }. Neovim writes the server's window/showMessage to the message
      -- area only; vim.notify reaches notification plugins too.
      vim.g.slm_last_edit = result
      if type(result) == "table" and not result.applied then
        notify("no edit: " .. tostring(result.message), vim.log.levels.WARN)
      end
    end
  end)
  if not sent then
    notify("the server is not running", vim.log.levels.WARN)
  end
end

--- Asks for an instruction (unless given), then rewrites `args`' range with it.
---@param args table { uri, range, ... }
---@param instruction string|nil
function M.rewrite(args, instruction)
  local function go(text)
    if text == nil or vim.trim(text) == "" then
      return
    end
    M.send(vim.tbl_extend("force", args, { action = "rewrite", instruction = text }))
  end
  if instruction and vim.trim(instruction) ~= "" then
    go(instruction)
  else
    vim.ui.input({ prompt = "[slm] rewrite: " }, go)
  end
end

--- Handler of the editor command slm.rewriteSelection (vim.lsp.commands).
---@param command lsp.Command
function M.rewrite_selection(command)
  local args = command.arguments and command.arguments[1]
  if type(args) ~= "table" then
    notify("slm.rewriteSelection without arguments", vim.log.levels.ERROR)
    return
  end
  M.rewrite(args, nil)
end

--- :[range]SlmEdit {instruction}: whole lines line1..line2 (1-based, inclusive).
---@param opts table the user command's opts
function M.command(opts)
  local bufnr = vim.api.nvim_get_current_buf()
  local args = {
    uri = vim.uri_from_bufnr(bufnr),
    range = {
      start = { line = opts.line1 - 1, character = 0 },
      ["end"] = { line = opts.line2, character = 0 },
    },
  }
  M.rewrite(args, opts.args)
end

--- Registers the slm.rewriteSelection handler (once, from plugin/slm.lua).
function M.register()
  vim.lsp.commands[methods.COMMAND_REWRITE_SELECTION] = M.rewrite_selection
end

return M
