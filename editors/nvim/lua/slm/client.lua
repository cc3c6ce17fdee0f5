-- The language server: starting it for buffers, finding it, restarting it when it dies on its
-- own, and requests that work on Neovim 0.10 (client.request(...)) and 0.11+ (client:request(...)).
local config = require("slm.config")
local methods = require("slm.methods")
local restart = require("slm.restart")

local M = {}

M.NAME = "slm-lsp"

local has_011 = vim.fn.has("nvim-0.11") == 1
local warned_cmd = false
local root_dir = nil

---@type slm.RestartPolicy|nil  made from the `restart` option on the first start
local policy = nil
---@type uv.uv_timer_t|nil  the restart waiting for its delay
local restart_timer = nil
--- Neovim is quitting: its clients stop, none restarts.
local leaving = false
--- Clients stopped by :SlmRestart: start again once they have exited.
local restart_after_exit = {} ---@type table<integer, boolean>

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

--- Sends a notification; returns whether the client took it.
---@param client vim.lsp.Client
---@return boolean
function M.notify(client, method, params)
  if has_011 then
    return client:notify(method, params)
  end
  return client.notify(method, params)
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
  if opts.restart and not policy then
    policy = restart.new(opts.restart)
  end
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
    on_init = function()
      if policy then
        policy:started(vim.uv.now())
      end
    end,
    on_exit = function(code, signal, client_id)
      -- Read now: Neovim forgets the client on its next loop iteration.
      local asked = M.stop_requested(vim.lsp.get_client_by_id(client_id), code, signal)
      vim.schedule(function()
        M.on_exit(code, signal, client_id, asked)
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

--- Starts the server for (attaches it to) every loaded buffer of an enabled filetype.
---@return boolean started whether a buffer got the server
function M.attach_all()
  local started = false
  for _, bufnr in ipairs(vim.api.nvim_list_bufs()) do
    if vim.api.nvim_buf_is_loaded(bufnr) and vim.bo[bufnr].filetype ~= "" and M.attach(bufnr) then
      started = true
    end
  end
  return started
end

--- Whether an exit was asked for: client:stop() (:LspStop, :SlmRestart, quitting Neovim) rather
--- than a crash. Called in the exit callback, while Neovim still knows the client.
---@param client vim.lsp.Client|nil
---@param code integer
---@param signal integer
---@return boolean
function M.stop_requested(client, code, signal)
  if leaving then
    return true
  end
  -- Neovim 0.11+ marks a client that was told to stop.
  if client and type(client._is_stopping) == "boolean" then
    return client._is_stopping
  end
  -- Neovim 0.10: the server exits with 0 only after the shutdown/exit that stop() sends.
  return code == 0 and (signal or 0) == 0
end

local function cancel_restart()
  if restart_timer then
    restart_timer:stop()
    restart_timer:close()
    restart_timer = nil
  end
end

--- Starts the server again after a crash, for the buffers that are open now.
local function restart_now()
  cancel_restart()
  if leaving then
    return
  end
  if not M.attach_all() then
    require("slm.status").set("stopped", "exited; it starts again with the next file of an enabled filetype")
  end
end

--- The server process exited. Asked to: "stopped" (and :SlmRestart starts it again). On its
--- own: a restart after the policy's delay, or, after too many crashes, none; either way a
--- WARN/ERROR message and the state `restarting` / `crashed`.
---@param code integer
---@param signal integer
---@param client_id integer
---@param asked boolean
function M.on_exit(code, signal, client_id, asked)
  local status = require("slm.status")
  local restart_requested = restart_after_exit[client_id]
  restart_after_exit[client_id] = nil
  pcall(function()
    require("slm.suggestion").reset() -- its request went to the dead server
    require("slm.next_edit").reset()
  end)
  if asked or not policy or leaving then
    status.on_exit(code, signal)
    if restart_requested and not leaving then
      restart_now()
    end
    return
  end
  local exited = ("the server exited (code %s, signal %s)"):format(tostring(code), tostring(signal or 0))
  local decision = policy:crashed(vim.uv.now())
  cancel_restart()
  if decision.restart then
    local delay = restart.format_delay(decision.delay_ms)
    status.set("restarting", ("%s; restarting in %s"):format(status.exit_detail(code, signal), delay))
    vim.notify(("[slm] %s; restarting it in %s (see :LspLog)"):format(exited, delay), vim.log.levels.WARN)
    restart_timer = assert(vim.uv.new_timer())
    restart_timer:start(math.floor(decision.delay_ms), 0, vim.schedule_wrap(restart_now))
  else
    local window = restart.format_delay(policy.opts.window_ms)
    status.set("crashed", ("%s; %d exits in %s, not restarted"):format(status.exit_detail(code, signal), decision.crashes, window))
    vim.notify(
      ("[slm] %s, %d times in %s: not restarting it. See :LspLog for the cause (a model or adapter llama.cpp cannot run?), then :SlmRestart."):format(
        exited,
        decision.crashes,
        window
      ),
      vim.log.levels.ERROR
    )
  end
end

--- :SlmRestart — stops the server (if it runs) and starts it again for the open buffers; the
--- crash count starts again.
function M.restart()
  cancel_restart()
  if policy then
    policy:reset()
  end
  local running = false
  for _, client in ipairs(vim.lsp.get_clients({ name = M.NAME })) do
    if not M.is_stopped(client) then
      running = true
      restart_after_exit[client.id] = true
      if has_011 then
        client:stop()
      else
        client.stop()
      end
    end
  end
  if not running then
    restart_now()
  end
end

--- VimLeavePre: the servers stop with Neovim and are not restarted.
function M.on_vim_leave()
  leaving = true
  cancel_restart()
end

return M
