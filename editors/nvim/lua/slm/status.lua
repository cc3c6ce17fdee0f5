-- The server's state: the last slm/status notification, :SlmStatus, :SlmLoadAdapter and a
-- statusline component.
local client = require("slm.client")
local methods = require("slm.methods")

local M = {}

---@class slm.Status
---@field state string   loading|ready|error|no-model|generating (from the server); stopped,
---                       restarting, crashed (the plugin's: the process exited)
---@field detail string
---@field latency_ms number|nil  the last completion's latency
---@field backend string         who answered the last completion: local, remote (a team server) or ""
---@field backend_reason string
---@field time number            vim.uv.now() when it arrived

---@type slm.Status|nil
M.last = nil

local function number_or_nil(value)
  return type(value) == "number" and value or nil
end

local function text_or_empty(value)
  return type(value) == "string" and value or ""
end

local function emit()
  pcall(vim.api.nvim_exec_autocmds, "User", { pattern = "SlmStatus", modeline = false, data = M.last })
end

--- Handler for the slm/status notification.
function M.on_notification(_, result)
  result = type(result) == "table" and result or {}
  M.last = {
    state = text_or_empty(result.state),
    detail = text_or_empty(result.detail),
    latency_ms = number_or_nil(result.latencyMs),
    backend = text_or_empty(result.backend),
    backend_reason = text_or_empty(result.backendReason),
    time = vim.uv.now(),
  }
  emit()
end

--- A state only the plugin knows (the process exited, is restarting, crashed too often).
---@param state string
---@param detail string
function M.set(state, detail)
  M.last = { state = state, detail = detail, latency_ms = nil, backend = "", backend_reason = "", time = vim.uv.now() }
  emit()
end

--- "exited with code 1", "exited with code 0, signal 9".
function M.exit_detail(code, signal)
  local detail = ("exited with code %s"):format(tostring(code))
  if signal and signal ~= 0 then
    detail = detail .. (", signal %s"):format(tostring(signal))
  end
  return detail
end

--- The server exited because it was asked to (a crash goes to slm.client's restart instead).
function M.on_exit(code, signal)
  local detail = M.exit_detail(code, signal)
  M.set("stopped", detail)
  if code ~= 0 then
    vim.notify("[slm] the server " .. detail .. " (see :LspLog)", vim.log.levels.WARN)
  end
end

local function ms(value)
  return type(value) == "number" and ("%d ms"):format(math.floor(value + 0.5)) or "-"
end

--- One line describing the last notification.
---@return string
function M.describe()
  local last = M.last
  if not last then
    return "no status from the server yet"
  end
  local line = "state: " .. (last.state ~= "" and last.state or "?")
  if last.detail ~= "" then
    line = line .. " (" .. last.detail .. ")"
  end
  line = line .. ", last latency: " .. ms(last.latency_ms)
  if last.backend ~= "" then
    local who = last.backend == "remote" and "the team server" or "the " .. last.backend .. " model"
    line = line .. ", answered by " .. who .. (last.backend_reason ~= "" and (" (" .. last.backend_reason .. ")") or "")
  end
  return line
end

--- A short string for a statusline: "slm: ready", "slm: loading", "slm: restarting", "" when
--- not running.
---@return string
function M.statusline()
  if not M.last then
    return client.get() and "slm" or ""
  end
  -- "(remote)": the last answer came from the team server, so the user sees when code left the laptop.
  return "slm: " .. M.last.state .. (M.last.backend == "remote" and " (remote)" or "")
end

--- :SlmStatus — the last notification at once, then the server's own view (slm.status).
function M.show()
  local enabled = require("slm").is_enabled() and "enabled" or "disabled (:SlmToggle)"
  vim.notify(("[slm] %s; completions %s"):format(M.describe(), enabled), vim.log.levels.INFO)
  local sent = client.execute(methods.COMMAND_STATUS, nil, function(err, result)
    if err then
      vim.notify("[slm] slm.status failed: " .. tostring(err.message or err), vim.log.levels.ERROR)
      return
    end
    result = type(result) == "table" and result or {}
    local function field(name)
      local v = result[name]
      return (v == nil or v == vim.NIL) and "-" or tostring(v)
    end
    vim.notify(
      ("[slm] server: state %s, model %s (template %s), adapter %s, GPU layers %s, last latency %s, cache hits %s%s"):format(
        field("state"),
        field("model"),
        field("template"),
        field("adapter"),
        field("nGpuLayers"),
        ms(result.lastLatencyMs),
        field("cacheHits"),
        text_or_empty(result.detail) ~= "" and (", " .. result.detail) or ""
      ),
      vim.log.levels.INFO
    )
  end)
  if not sent then
    vim.notify("[slm] the server is not running (open a file of an enabled filetype)", vim.log.levels.WARN)
  end
end

--- :SlmLoadAdapter [path] — apply a LoRA adapter; no path removes it.
---@param path string|nil
function M.load_adapter(path)
  path = path and vim.trim(path) or ""
  if path ~= "" then
    path = vim.fn.fnamemodify(vim.fn.expand(path), ":p")
  end
  local sent = client.execute(methods.COMMAND_LOAD_ADAPTER, { path }, function(err)
    if err then
      vim.notify("[slm] could not load the adapter: " .. tostring(err.message or err), vim.log.levels.ERROR)
    else
      vim.notify(path ~= "" and ("[slm] adapter loaded: " .. path) or "[slm] adapter removed", vim.log.levels.INFO)
    end
  end)
  if not sent then
    vim.notify("[slm] the server is not running", vim.log.levels.WARN)
  end
end

return M
