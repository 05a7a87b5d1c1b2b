"""Compatibility of two models: the framework-neutral model graph (modelgraph), the report
(report), its tables (view) and its drawings (render)."""
