"""Compatibility of two models: the framework-neutral model graph (modelgraph), the report
(report), the comparison of two live workers (live), its tables (view) and its drawings (render)."""
