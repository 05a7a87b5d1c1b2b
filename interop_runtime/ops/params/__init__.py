"""Parameters across workers: versioned reads and writes, averaging, broadcast and
safetensors files (plane), and copies across frameworks with layout transforms (mapping)."""
