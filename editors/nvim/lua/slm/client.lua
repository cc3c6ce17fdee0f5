-- The language server: starting it for buffers, finding it, and requests that work on
-- Neovim 0.10 (client.request(...)) and 0.11+ (client:request(...)).
local config = require("slm.config")
local methods = require("slm.methods")

local M = {}

M.NAME = "slm-lsp"

local has_011 = vim.fn.has("nvim-0.11") == 1
local warned_cmd = false
local root_dir = nil

--- Sends a request; returns the request id (nil when the client refused it).
---@param client vim.lsp.Client
---@return integer|nil
function M.request(client, method, params, handler, bufnr)
  local ok, id
  if has_011 then
    ok, id = client:request(method, params, handler, bufnr)
  else
    ok, id = client.request(method, params, handler, bufnr)
  end
  return ok and id or nil
end

--- A synchronous request: { err, result }, or nil on timeout or when the client is stopped.
---@param client vim.lsp.Client
---@return {err: table|nil, result: any}|nil
function M.request_sync(client, method, params, timeout_ms, bufnr)
  if has_011 then
    return (client:request_sync(method, params, timeout_ms, bufnr))
  end
  return (client.request_sync(method, params, timeout_ms, bufnr))
end

---@param client vim.lsp.Client
---@param id integer
function M.cancel(client, id)
  if has_011 then
    client:cancel_request(id)
  else
    client.cancel_request(id)
  end
end

---@param client vim.lsp.Client
---@return boolean
function M.is_stopped(client)
  if has_011 then
    return client:is_stopped()
  end
  return client.is_stopped()
end

--- The slm-lsp client attached to `bufnr` (any buffer when nil).
---@param bufnr integer|nil
---@return vim.lsp.Client|nil
function M.get(bufnr)
  local filter = { name = M.NAME }
  if bufnr then
    filter.bufnr = bufnr == 0 and vim.api.nvim_get_current_buf() or bufnr
  end
  for _, client in ipairs(vim.lsp.get_clients(filter)) do
    if not M.is_stopped(client) then
      return client
    end
  end
  return nil
end

--- workspace/executeCommand for the slm.* commands.
---@param command string
---@param arguments table|nil
---@param callback fun(err: table|nil, result: any)
---@return boolean sent
function M.execute(command, arguments, callback)
  local client = M.get(0) or M.get()
  if not client then
    return false
  end
  local params = { command = command, arguments = arguments }
  return M.request(client, "workspace/executeCommand", params, function(err, result)
    callback(err, result)
  end, vim.api.nvim_get_current_buf()) ~= nil
end

--- Answers workspace/configuration: the "slm" section is the configured settings. (Answering
--- here instead of passing `settings` keeps Neovim from also sending didChangeConfiguration at
--- start-up, which would make the server load the model twice.)
local function on_configuration(_, params)
  local settings = config.server_settings()
  local result = {}
  for i, item in ipairs(params and params.items or {}) do
    if item.section == methods.CONFIG_SECTION then
      result[i] = settings or vim.empty_dict()
    elseif item.section == nil then
      result[i] = { [methods.CONFIG_SECTION] = settings or vim.empty_dict() }
    else
      result[i] = vim.NIL
    end
  end
  return result
end

--- Starts the server for `bufnr` (or attaches the running one) when its filetype is enabled.
---@param bufnr integer
---@return integer|nil client_id
function M.attach(bufnr)
  if not vim.api.nvim_buf_is_valid(bufnr) or vim.bo[bufnr].buftype ~= "" then
    return nil
  end
  if not config.filetype_enabled(vim.bo[bufnr].filetype) then
    return nil
  end
  local opts = config.options
  if vim.fn.executable(opts.cmd[1]) ~= 1 then
    if not warned_cmd then
      warned_cmd = true
      vim.notify(
        ("[slm] server command not found: %s (install slm-lsp or set `cmd` in setup())"):format(opts.cmd[1]),
        vim.log.levels.ERROR
      )
    end
    return nil
  end
  root_dir = root_dir or vim.fn.getcwd()
  local status = require("slm.status")
  local settings = config.server_settings()
  local ok, id = pcall(vim.lsp.start, {
    name = M.NAME,
    cmd = opts.cmd,
    cmd_env = opts.cmd_env,
    -- One server (one model in memory) for the whole session, whatever the project.
    root_dir = root_dir,
    init_options = settings,
    handlers = {
      [methods.STATUS_NOTIFICATION] = status.on_notification,
      ["workspace/configuration"] = on_configuration,
    },
    on_exit = function(code, signal)
      vim.schedule(function()
        status.on_exit(code, signal)
      end)
    end,
  }, {
    bufnr = bufnr,
    reuse_client = function(client, conf)
      return client.name == conf.name and not M.is_stopped(client)
    end,
  })
  if not ok then
    vim.notify("[slm] could not start the server: " .. tostring(id), vim.log.levels.ERROR)
    return nil
  end
  return id
end

return M
