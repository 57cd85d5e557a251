"""Reports over several runs: the ablation (arms × seeds against SFT) and the validation sweep's table."""
