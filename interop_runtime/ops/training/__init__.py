"""Training across workers: the train-step contract plugins implement (spec), datasets that
ship in packages (data), and fine-tuning, distillation and evaluation loops (loops)."""
