-- slm.nvim user commands. Everything else starts with require("slm").setup().
if vim.g.loaded_slm then
  return
end
vim.g.loaded_slm = true

local command = vim.api.nvim_create_user_command

command("SlmStatus", function()
  require("slm.status").show()
end, { desc = "[slm] show the server and model state" })

command("SlmToggle", function()
  require("slm").toggle()
end, { desc = "[slm] turn completions on or off" })

command("SlmEnable", function()
  require("slm").enable()
end, { desc = "[slm] turn completions on" })

command("SlmDisable", function()
  require("slm").disable()
end, { desc = "[slm] turn completions off" })

command("SlmRestart", function()
  require("slm.client").restart()
end, { desc = "[slm] restart the server (also after it crashed too often to be restarted)" })

command("SlmLoadAdapter", function(args)
  require("slm.status").load_adapter(args.args)
end, { nargs = "?", complete = "file", desc = "[slm] apply a LoRA adapter (no argument: remove it)" })

command("SlmEdit", function(args)
  require("slm.edit").command(args)
end, { nargs = "*", range = true, desc = "[slm] rewrite the selected lines as the instruction says" })

require("slm.edit").register() -- the "Rewrite selection…" code action's command
