-- Options: defaults, validation (vim.validate, every option) and the server settings they imply.
local M = {}

---@class slm.Keymaps
---@field accept string|string[]|false      accept the whole suggestion
---@field accept_word string|string[]|false accept its next word
---@field accept_line string|string[]|false accept the rest of its current line
---@field dismiss string|string[]|false     hide it (until the next edit)
---@field suggest string|string[]|false     ask for a suggestion now

---@class slm.NextEditKeymaps
---@field accept string|string[]|false   jump to the next edit; pressed there, apply it (Normal and Insert mode)
---@field dismiss string|string[]|false  hide it (Normal mode)

---@class slm.NextEditOptions
---@field enabled boolean                 ask for next edits after edits
---@field debounce_ms integer             pause after an edit before the request
---@field keymaps slm.NextEditKeymaps|false

---@class slm.Options
---@field cmd string[]                      the server command
---@field cmd_env table<string,string>|nil  extra environment for the server
---@field model string|nil                  GGUF path or hf:OWNER/REPO/FILE.gguf (server: model.path)
---@field n_gpu_layers integer|nil          layers to offload (server: model.n_gpu_layers)
---@field filetypes string[]                filetypes to attach to; "*" for all
---@field exclude_filetypes string[]        filetypes never attached to
---@field debounce_ms integer               pause after typing before a request
---@field auto_trigger boolean              request while typing (false: only with keymaps.suggest)
---@field keymaps slm.Keymaps|false         insert-mode keys; false: none
---@field settings table                    server settings (initializationOptions and "slm" section)
---@field restart slm.RestartOptions|false   restarting a server that died on its own; false: never
---@field next_edit slm.NextEditOptions|false  next-edit suggestions (slm/nextEdit); false: none

---@type slm.Options
M.defaults = {
  cmd = { "slm-lsp", "serve" },
  cmd_env = nil,
  model = nil,
  n_gpu_layers = nil,
  filetypes = { "*" },
  exclude_filetypes = { "help", "gitcommit", "gitrebase", "hgcommit", "svn", "cvs", "netrw", "qf", "TelescopePrompt" },
  debounce_ms = 150,
  auto_trigger = true,
  keymaps = {
    accept = { "<Tab>", "<M-l>" },
    accept_word = "<M-w>",
    accept_line = "<M-j>",
    dismiss = "<C-]>",
    suggest = "<M-\\>",
  },
  settings = {},
  restart = vim.deepcopy(require("slm.restart").defaults),
  next_edit = {
    enabled = true,
    -- Longer than the completion's: an edit is rarely followed by a pause this long mid-word.
    debounce_ms = 500,
    keymaps = {
      accept = "<Tab>",
      dismiss = "<Esc>",
    },
  },
}

---@type slm.Options
M.options = vim.deepcopy(M.defaults)

local has_011 = vim.fn.has("nvim-0.11") == 1

--- vim.validate with one signature on 0.10 (table form) and 0.11+ (positional form). The error
--- is re-raised without a "config.lua:NN:" prefix: the user's option is at fault, not this file.
---@param message string|nil what a function validator expects
local function check(name, value, validator, optional, message)
  if optional and value == nil then
    return
  end
  local ok, err
  if has_011 then
    ok, err = pcall(vim.validate, name, value, validator, message)
  elseif type(validator) == "function" then
    ok, err = pcall(vim.validate, { [name] = { value, validator, message } })
  else
    ok, err = pcall(vim.validate, { [name] = { value, validator } })
  end
  if not ok then
    error((tostring(err):gsub("^[^\n]-%.lua:%d+: ", "")), 0)
  end
end

local function is_string_list(value)
  if type(value) ~= "table" then
    return false
  end
  for _, v in ipairs(value) do
    if type(v) ~= "string" then
      return false
    end
  end
  return #value == vim.tbl_count(value)
end

local function keymap_value(value)
  if value == false or (type(value) == "string" and value ~= "") then
    return true
  end
  return type(value) == "table" and #value > 0 and is_string_list(value)
end

local function known_keys(name, value, allowed)
  for key in pairs(value) do
    if allowed[key] == nil then
      error(("%s: unknown option %s"):format(name, vim.inspect(key)), 0)
    end
  end
end

--- Validates user options; raises a "name: expected ..." error on the first invalid one.
---@param opts table
function M.validate(opts)
  check("opts", opts, "table")
  local allowed = vim.tbl_extend("force", vim.deepcopy(M.defaults), {
    cmd_env = false,
    model = false,
    n_gpu_layers = false,
  })
  known_keys("opts", opts, allowed)
  check("cmd", opts.cmd, function(v)
    return is_string_list(v) and #v > 0 and v[1] ~= ""
  end, true, "a non-empty list of strings")
  check("cmd_env", opts.cmd_env, "table", true)
  check("model", opts.model, "string", true)
  check("n_gpu_layers", opts.n_gpu_layers, function(v)
    return type(v) == "number" and v == math.floor(v) and v >= -1
  end, true, "an integer >= -1")
  check("filetypes", opts.filetypes, is_string_list, true, "a list of filetypes")
  check("exclude_filetypes", opts.exclude_filetypes, is_string_list, true, "a list of filetypes")
  check("debounce_ms", opts.debounce_ms, function(v)
    return type(v) == "number" and v >= 0
  end, true, "a number >= 0")
  check("auto_trigger", opts.auto_trigger, "boolean", true)
  check("keymaps", opts.keymaps, { "table", "boolean" }, true)
  if opts.keymaps == true then
    error("keymaps: expected a table or false, got true", 0)
  end
  if type(opts.keymaps) == "table" then
    known_keys("keymaps", opts.keymaps, M.defaults.keymaps)
    for name in pairs(M.defaults.keymaps) do
      check("keymaps." .. name, opts.keymaps[name], keymap_value, true, "a key, a list of keys or false")
    end
  end
  check("settings", opts.settings, "table", true)
  check("restart", opts.restart, { "table", "boolean" }, true)
  if opts.restart == true then
    error("restart: expected a table or false, got true", 0)
  end
  if type(opts.restart) == "table" then
    known_keys("restart", opts.restart, M.defaults.restart)
    for name in pairs(M.defaults.restart) do
      if name == "max_crashes" then
        check("restart.max_crashes", opts.restart.max_crashes, function(v)
          return type(v) == "number" and v == math.floor(v) and v >= 0
        end, true, "an integer >= 0")
      else
        check("restart." .. name, opts.restart[name], function(v)
          return type(v) == "number" and v >= 0
        end, true, "a number of ms >= 0")
      end
    end
  end
  M.validate_next_edit(opts.next_edit)
end

--- Validates the `next_edit` option (nil, false or a table).
---@param value any
function M.validate_next_edit(value)
  check("next_edit", value, { "table", "boolean" }, true)
  if value == true then
    error("next_edit: expected a table or false, got true", 0)
  end
  if type(value) ~= "table" then
    return
  end
  known_keys("next_edit", value, M.defaults.next_edit)
  check("next_edit.enabled", value.enabled, "boolean", true)
  check("next_edit.debounce_ms", value.debounce_ms, function(v)
    return type(v) == "number" and v >= 0
  end, true, "a number >= 0")
  check("next_edit.keymaps", value.keymaps, { "table", "boolean" }, true)
  if value.keymaps == true then
    error("next_edit.keymaps: expected a table or false, got true", 0)
  end
  if type(value.keymaps) == "table" then
    known_keys("next_edit.keymaps", value.keymaps, M.defaults.next_edit.keymaps)
    for name in pairs(M.defaults.next_edit.keymaps) do
      check("next_edit.keymaps." .. name, value.keymaps[name], keymap_value, true, "a key, a list of keys or false")
    end
  end
end

--- Validates and stores the options (merged over the defaults).
---@param opts table|nil
---@return slm.Options
function M.set(opts)
  opts = opts or {}
  M.validate(opts)
  local merged = vim.tbl_deep_extend("force", vim.deepcopy(M.defaults), opts)
  -- Lists replace the defaults, they are not merged index by index.
  for _, key in ipairs({ "cmd", "filetypes", "exclude_filetypes" }) do
    if opts[key] ~= nil then
      merged[key] = vim.deepcopy(opts[key])
    end
  end
  if opts.keymaps == false then
    merged.keymaps = false
  elseif type(opts.keymaps) == "table" then
    for name, value in pairs(opts.keymaps) do
      merged.keymaps[name] = vim.deepcopy(value)
    end
  end
  if opts.next_edit == false then
    merged.next_edit = false
  elseif type(opts.next_edit) == "table" and opts.next_edit.keymaps == false then
    merged.next_edit.keymaps = false
  elseif type(opts.next_edit) == "table" and type(opts.next_edit.keymaps) == "table" then
    for name, value in pairs(opts.next_edit.keymaps) do
      merged.next_edit.keymaps[name] = vim.deepcopy(value)
    end
  end
  M.options = merged
  return merged
end

--- The server settings: options.settings plus model / n_gpu_layers (which win). nil when empty
--- (an empty Lua table would be sent as a JSON array).
---@return table|nil
function M.server_settings()
  local o = M.options
  local settings = vim.deepcopy(o.settings or {})
  if o.model ~= nil or o.n_gpu_layers ~= nil then
    settings.model = type(settings.model) == "table" and settings.model or {}
    settings.model.path = o.model or settings.model.path
    settings.model.n_gpu_layers = o.n_gpu_layers or settings.model.n_gpu_layers
  end
  if next(settings) == nil then
    return nil
  end
  return settings
end

--- Whether buffers of this filetype get completions.
---@param ft string
---@return boolean
function M.filetype_enabled(ft)
  local o = M.options
  if ft == "" or vim.tbl_contains(o.exclude_filetypes, ft) then
    return false
  end
  return vim.tbl_contains(o.filetypes, "*") or vim.tbl_contains(o.filetypes, ft)
end

return M
