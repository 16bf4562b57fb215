"""finetune trainer: what runs in a trainer pod."""
