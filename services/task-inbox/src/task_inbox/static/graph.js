// Renders the instance graph (<pre class="mermaid">) with the vendored Mermaid; nothing else runs.
/* global mermaid */
mermaid.initialize({ startOnLoad: true, securityLevel: "strict", theme: "neutral" });
