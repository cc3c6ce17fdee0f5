"""LoRA finetuning for slm-lsp (``slm-lsp finetune``): adapt the served GGUF model to a repository.

``config`` (the one typed config and presets), ``data`` (files, split, FIM examples laid out by
the server's PromptBuilder), ``base`` (base model, tokenizer, template), ``lora`` (the script),
``evaluate`` (held-out loss and line completions), ``export`` (the GGUF LoRA adapter).
Everything but ``export`` and ``config`` needs the ``finetune`` extra (torch, transformers, peft).
"""
