"""Migration through ONNX: the export contract plugins implement (exportspec), the
migration itself (migrate) and the parity report (parity)."""
