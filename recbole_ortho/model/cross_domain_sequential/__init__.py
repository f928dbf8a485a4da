"""Cross-domain sequential models of recbole_ortho (one model per file)."""
