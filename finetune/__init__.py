"""LoRA finetuning for slm-lsp (``slm-lsp finetune``): not built yet, see the finetune issue."""
