import WscanCatalog
/// Audit reports (Markdown, SVG figures, Graphviz diagrams) — see issue 7.
public enum Report {}
