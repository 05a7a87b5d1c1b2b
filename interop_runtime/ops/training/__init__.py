"""Training across workers: the train-step contract plugins implement (spec), datasets that
ship in packages (data), fine-tuning, distillation and evaluation loops (loops), steered by
seeds, orders, samplers or the caller's batches (order), reporting typed epoch records
(record), and checkpoints that resume with the optimizer state (checkpoint)."""
