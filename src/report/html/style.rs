//! The page's stylesheet, inline in its `<style>` element (the page loads nothing).

pub(crate) const STYLE: &str = "
body{font:14px/1.45 system-ui,-apple-system,'Segoe UI',Roboto,sans-serif;color:#1d1d1f;margin:24px auto;max-width:1200px;padding:0 16px}
h1{font-size:22px;margin:0 0 4px}h2{font-size:17px;margin:28px 0 8px;border-bottom:1px solid #ddd;padding-bottom:4px}
.sub{color:#555;margin:0 0 16px}
.verdict{font-size:17px;font-weight:600;padding:12px 16px;border-radius:6px;margin:16px 0}
.verdict.good{background:#e6f4ea;border:1px solid #34a853}.verdict.bad{background:#fce8e6;border:1px solid #d93025}
.verdict.warn{background:#fef7e0;border:1px solid #f9ab00}
table{border-collapse:collapse;margin:4px 0 8px}th,td{padding:3px 8px;border-bottom:1px solid #e5e5e5;text-align:left;vertical-align:top}
thead th{position:sticky;top:0;background:#f5f5f7;border-bottom:1px solid #bbb}
td.n{text-align:right;font-variant-numeric:tabular-nums}
.kv th{font-weight:normal;color:#555;padding-right:16px}
.unknown{color:#888}
tr.dirty td{background:#fce8e6}tr.dirty td.verdict-cell{font-weight:600;color:#b3261e}
td.err{max-width:420px;overflow-wrap:anywhere;font-size:12px;color:#444}
code,.mono{font-family:ui-monospace,SFMono-Regular,Menlo,Consolas,monospace;font-size:12.5px}
.note{color:#555;font-size:13px}
#rate-chart{max-width:960px;display:block;margin:8px 0}
#rate-chart .grid{stroke:#eee}#rate-chart .axis{stroke:#888}
#rate-chart .tick{font-size:11px;fill:#555}#rate-chart .label{font-size:12px;fill:#333}
.ok{fill:#4e79a7}.limited{fill:#f28e2b}.failed{fill:#d62728}.noreply{fill:#9a9a9a}
#rate-chart .rate-limit{stroke:#111;stroke-width:1.5;stroke-dasharray:6 4}
#rate-chart .rate-label{font-size:11px;fill:#111}
.legend{list-style:none;padding:0;margin:4px 0;display:flex;gap:18px;flex-wrap:wrap;font-size:13px}
.swatch{display:inline-block;width:12px;height:12px;margin-right:5px;vertical-align:-1px}
.swatch.ok{background:#4e79a7}.swatch.limited{background:#f28e2b}.swatch.failed{background:#d62728}
.swatch.noreply{background:#9a9a9a}.swatch.rate{border-top:2px dashed #111;height:0;width:18px;vertical-align:3px}
#flat-chart{max-width:960px;display:block;margin:8px 0}
#flat-chart .grid{stroke:#eee}#flat-chart .axis{stroke:#888}
#flat-chart .tick{font-size:11px;fill:#555}#flat-chart .label{font-size:12px;fill:#333}
#flat-chart polyline{fill:none;stroke-width:2}#flat-chart .cancelled{stroke:#4e79a7}#flat-chart .proven{stroke:#59a14f}
#flat-chart .bound{stroke:#111;stroke-width:1.2}#flat-chart .bound.proof{stroke-dasharray:6 4}
.swatch.line{height:0;width:18px;vertical-align:3px;border-top:2px solid #111}
.swatch.line.cancelled{border-top-color:#4e79a7}.swatch.line.proven{border-top-color:#59a14f}
.swatch.line.bound.proof{border-top-style:dashed}
@media print{thead th{position:static}.verdict{border-width:2px}}
";
