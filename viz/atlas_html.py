# ruff: noqa: E501  (inline JavaScript and CSS: their lines are kept whole)
"""The two pages of the expert atlas (``viz/atlas.py``): the index (grid, key, search) and the expert page.

Plain HTML with inline CSS and JavaScript, no library and no network: the data arrives as script shards
(``data/*.js``) that call ``atlasMeta``, ``atlasGrid``, ``atlasLayer`` and ``atlasSearch``, because
browsers refuse ``fetch()`` on file://. Text from the store is inserted as text nodes, never as HTML.
"""

from __future__ import annotations

_CSS = """
body{font:14px/1.45 system-ui,sans-serif;margin:20px auto;max-width:1240px;color:#222;padding:0 16px}
h1{font-size:21px;margin:0 0 4px}h2{font-size:16px;margin:22px 0 6px;border-bottom:1px solid #ddd}
.sub{color:#555}.note{background:#fff6d6;border-left:4px solid #e0b400;padding:4px 10px;margin:8px 0}
table{border-collapse:collapse;font-size:13px}td,th{padding:2px 8px;text-align:left;vertical-align:top}
th{border-bottom:1px solid #bbb;font-weight:600}tr:nth-child(even) td{background:#f7f7f7}
td.num{text-align:right;font-variant-numeric:tabular-nums}
.ctx{font-family:ui-monospace,monospace;white-space:pre-wrap;word-break:break-all}
.hit{background:#ffd54f;border-radius:3px;padding:0 2px;font-weight:700}
.tok{font-family:ui-monospace,monospace;background:#eef;padding:0 3px;border-radius:3px}
.cols{display:flex;gap:28px;flex-wrap:wrap}.cols>div{flex:1;min-width:320px}
.bar{display:inline-block;height:10px;background:#3b6fd8;vertical-align:middle}
.base{display:inline-block;height:4px;background:#aaa;vertical-align:middle}
a{color:#1a56c4;text-decoration:none}a:hover{text-decoration:underline}
#grid{cursor:pointer;image-rendering:pixelated;border:1px solid #ccc}
#tip{position:fixed;pointer-events:none;background:#222;color:#fff;padding:3px 7px;border-radius:4px;font-size:12px;
display:none;z-index:9}
#key{display:flex;align-items:center;gap:8px;margin:6px 0;font-size:12px;color:#444}
#results li{margin:3px 0}input[type=search]{font-size:15px;padding:4px 8px;width:320px}
"""

_COMMON_JS = r"""
function el(tag, attrs, ...kids){const e=document.createElement(tag);
  for(const [k,v] of Object.entries(attrs||{})){if(k==='text')e.textContent=v;else e.setAttribute(k,v);}
  for(const c of kids){if(c!=null)e.append(c);}return e;}
function fmt(x,d){return x==null?'–':(+x).toFixed(d===undefined?2:d);}
function pct(x){return x==null?'–':(100*x).toFixed(1)+'%';}
function pad3(n){return String(n).padStart(3,'0');}
function loadScript(src,onload){const s=document.createElement('script');s.src=src;s.onload=onload;
  s.onerror=()=>{document.getElementById('status').textContent='could not load '+src;};document.head.append(s);}
let META=null;function atlasMeta(m){META=m;}
"""

INDEX_HTML = (
    """<!doctype html><html lang="en"><head><meta charset="utf-8"><title>Expert atlas</title><style>"""
    + _CSS
    + """</style></head><body>
<h1 id="title">Expert atlas</h1><div class="sub" id="sub"></div><div id="notes"></div>
<h2>Layer × expert</h2>
<label>colour by <select id="metric"></select></label> <span id="mdesc" class="sub"></span>
<div id="key"><span id="kmin"></span><canvas id="kbar" width="240" height="12"></canvas><span id="kmax"></span>
<span class="sub">(grey: no tokens; scale clipped to the 2nd–98th percentile)</span></div>
<canvas id="grid"></canvas><div id="tip"></div>
<div class="sub" id="axes"></div>
<h2>Search tokens and contexts</h2>
<div class="sub">experts whose special or frequent tokens match come first (exact token, spaces ignored, then by the token's lift), then those whose top contexts contain the text</div>
<input type="search" id="q" placeholder="a token or some text, e.g. def" autocomplete="off">
<span id="status" class="sub"></span><ol id="results"></ol>
<script>"""
    + _COMMON_JS
    + r"""
let GRID=null;function atlasGrid(g){GRID=g;}
let SEARCH=[],LOADED=-1;function atlasSearch(s){SEARCH=SEARCH.concat(s);}
const STOPS=[[68,1,84],[59,82,139],[33,145,140],[94,201,98],[253,231,37]];
function colour(t){t=Math.max(0,Math.min(1,t));const x=t*(STOPS.length-1),i=Math.min(Math.floor(x),STOPS.length-2),f=x-i;
  const a=STOPS[i],b=STOPS[i+1];return `rgb(${a.map((v,j)=>Math.round(v+(b[j]-v)*f)).join(',')})`;}
function quantile(s,q){if(!s.length)return 0;return s[Math.min(s.length-1,Math.floor(q*(s.length-1)))];}
function draw(){
  const m=document.getElementById('metric').value,rows=GRID[m],E=META.n_experts,L=rows.length;
  document.getElementById('mdesc').textContent=META.metrics[m];
  const vals=rows.flat().filter(v=>v!=null).sort((a,b)=>a-b),lo=quantile(vals,0.02),hi=quantile(vals,0.98);
  const cw=Math.max(2,Math.floor(1180/E)),ch=Math.max(6,Math.min(24,Math.floor(600/L)));
  const c=document.getElementById('grid');c.width=E*cw;c.height=L*ch;c.dataset.cw=cw;c.dataset.ch=ch;
  const ctx=c.getContext('2d');
  rows.forEach((r,li)=>r.forEach((v,e)=>{ctx.fillStyle=v==null?'#ddd':colour((v-lo)/((hi-lo)||1));
    ctx.fillRect(e*cw,li*ch,cw,ch);}));
  const k=document.getElementById('kbar').getContext('2d');
  for(let x=0;x<240;x++){k.fillStyle=colour(x/239);k.fillRect(x,0,1,12);}
  document.getElementById('kmin').textContent=fmt(lo,3);document.getElementById('kmax').textContent=fmt(hi,3);
}
function cellAt(ev){const c=ev.target,r=c.getBoundingClientRect();
  const e=Math.floor((ev.clientX-r.left)*c.width/r.width/c.dataset.cw),li=Math.floor((ev.clientY-r.top)*c.height/r.height/c.dataset.ch);
  return (e>=0&&e<META.n_experts&&li>=0&&li<META.layers.length)?[li,e]:null;}
function init(){
  document.title='Expert atlas · '+META.model;
  document.getElementById('title').textContent=`Expert atlas · ${META.model}`;
  document.getElementById('sub').textContent=`${META.store} · selection: ${META.selection} · ${META.tokens.toLocaleString()} tokens · `+
    `${META.layers.length} MoE layers × ${META.n_experts} experts, top-${META.top_k} · built ${META.built}`;
  for(const n of META.notes)document.getElementById('notes').append(el('div',{class:'note',text:n}));
  const sel=document.getElementById('metric');
  for(const m of Object.keys(META.metrics)){const o=el('option',{value:m,text:m});if(m===META.metric)o.selected=true;sel.append(o);}
  sel.onchange=draw;draw();
  document.getElementById('axes').textContent=`rows: MoE layers ${META.layers[0]} (top) to ${META.layers[META.layers.length-1]}; `+
    `columns: experts 0 to ${META.n_experts-1}; hover for values, click for the expert's page`;
  const c=document.getElementById('grid'),tip=document.getElementById('tip');
  c.onmousemove=ev=>{const h=cellAt(ev);if(!h){tip.style.display='none';return;}
    const [li,e]=h,m=sel.value;tip.textContent=`L${META.layers[li]}:E${e} · ${m} ${fmt(GRID[m][li][e],3)}`;
    tip.style.left=(ev.clientX+12)+'px';tip.style.top=(ev.clientY+12)+'px';tip.style.display='block';};
  c.onmouseleave=()=>{tip.style.display='none';};
  c.onclick=ev=>{const h=cellAt(ev);if(h)location.href=`expert.html#L${META.layers[h[0]]}:E${h[1]}`;};
  let timer=null;document.getElementById('q').oninput=()=>{clearTimeout(timer);timer=setTimeout(search,150);};
}
function loadNext(){if(LOADED>=META.search_shards)return;
  loadScript(`data/search-${String(LOADED).padStart(2,'0')}.js`,()=>{LOADED++;search();loadNext();});}
function norm(x){return x.replace(/\u2423/g,' ').trim().toLowerCase();}
function search(){
  const q=document.getElementById('q').value.trim().toLowerCase(),out=document.getElementById('results');
  if(!q){out.replaceChildren();document.getElementById('status').textContent='';return;}
  if(LOADED<0){LOADED=0;loadNext();}
  const hits=[];
  for(const [L,E,toks,lifts,ctxs] of SEARCH){
    const t=toks.split('\u241f'),tl=t.map(norm),te=tl.indexOf(norm(q)),ti=te>=0?te:tl.findIndex(x=>x.includes(q));
    if(ti>=0){hits.push([te>=0?0:1,-(lifts[ti]||0),L,E,`token ${t[ti]} (lift ${fmt(lifts[ti])})`]);continue;}
    const c=ctxs.split('\u241f').find(x=>x.toLowerCase().includes(q));
    if(c)hits.push([2,0,L,E,'context …'+c+'…']);}
  hits.sort((a,b)=>a[0]-b[0]||a[1]-b[1]||a[2]-b[2]||a[3]-b[3]);
  const busy=LOADED<META.search_shards?` (searching… ${LOADED} of ${META.search_shards} parts)`:'';
  document.getElementById('status').textContent=`${hits.length} expert(s) match`+(hits.length>100?' (first 100 shown)':'')+busy;
  out.replaceChildren(...hits.slice(0,100).map(h=>el('li',{},el('a',{href:`expert.html#L${h[2]}:E${h[3]}`,text:`L${h[2]}:E${h[3]}`}),
    ' ',el('span',{class:'ctx',text:h[4]}))));
}
</script>
<script src="data/meta.js"></script><script src="data/grid.js"></script><script>init();</script>
</body></html>
"""
)

EXPERT_HTML = (
    """<!doctype html><html lang="en"><head><meta charset="utf-8"><title>Expert</title><style>"""
    + _CSS
    + """</style></head><body>
<div class="sub"><a href="index.html">← atlas</a> · <a id="prev">◀ previous</a> · <a id="next">next ▶</a>
<span id="status"></span></div>
<div id="page"><p>loading…</p></div>
<script>"""
    + _COMMON_JS
    + r"""
const SHARDS={};function atlasLayer(d){SHARDS[`${d.layer}-${d.block}`]=d;}
function parse(){const m=/^#L(\d+):E(\d+)$/.exec(location.hash);return m?[+m[1],+m[2]]:[META.layers[0],0];}
function table(head,rows){return el('table',{},el('tr',{},...head.map(h=>el('th',{text:h}))),
  ...rows.map(r=>el('tr',{},...r.map(c=>c instanceof Node?el('td',{},c):el('td',{class:typeof c==='number'?'num':'',text:c==null?'–':String(c)})))));}
function bars(rows,max){return table(['group','tokens','share (95% interval)','base','ratio (95%)'],rows.map(r=>[r[0],r[1],
  el('span',{},el('span',{class:'bar',style:`width:${Math.round(160*r[2]/max)}px`}),` ${pct(r[2])} (${pct(r[3])}–${pct(r[4])})`),
  el('span',{},el('span',{class:'base',style:`width:${Math.round(160*r[5]/max)}px`}),` ${pct(r[5])}`),
  `×${fmt(r[6])} (${fmt(r[7])}–${fmt(r[8])})`]));}
function hist(counts,labels){const top=Math.max(1,...counts);return table(['bin','tokens',''],counts.map((c,i)=>[labels[i],c,
  el('span',{class:'bar',style:`width:${Math.round(200*c/top)}px`})]));}
function link(L,E){return el('a',{href:`#L${L}:E${E}`,text:`L${L}:E${E}`});}
function neighbours(rows){return rows.length?table(['expert','tokens','share','lift'],rows.map(r=>[link(r[0],r[1]),r[2],pct(r[3]),fmt(r[4])])):el('p',{text:'–'});}
function render(){
  const [L,E]=parse(),blk=Math.floor(E/META.block),d=SHARDS[`${L}-${blk}`],root=document.getElementById('page');
  if(!META.layers.includes(L)||E<0||E>=META.n_experts){root.replaceChildren(el('p',{class:'note',
    text:`L${L}:E${E} is not in this atlas: layers ${META.layers[0]}..${META.layers[META.layers.length-1]}, experts 0..${META.n_experts-1}`}));return;}
  if(!d){root.replaceChildren(el('p',{text:`loading layer ${L}…`}));
    loadScript(`data/L${pad3(L)}-B${String(blk).padStart(2,'0')}.js`,render);return;}
  const p=d.experts[E-blk*META.block],li=META.layers.indexOf(L);
  document.title=`L${L}:E${E} · expert atlas`;
  const pv=E>0?[L,E-1]:li>0?[META.layers[li-1],META.n_experts-1]:null,nx=E+1<META.n_experts?[L,E+1]:li+1<META.layers.length?[META.layers[li+1],0]:null;
  for(const [id,t] of [['prev',pv],['next',nx]]){const a=document.getElementById(id);if(t)a.href=`#L${t[0]}:E${t[1]}`;else a.removeAttribute('href');}
  const load=p.n/d.tokens,uni=META.top_k/META.n_experts;
  const kids=[el('h1',{text:`Expert L${L}:E${E}`}),el('div',{class:'sub',text:`${META.model} · selection: ${META.selection} · `+
    `${p.n.toLocaleString()} of ${d.tokens.toLocaleString()} tokens routed here (${pct(load)}; uniform ${pct(uni)})`})];
  for(const n of META.notes)kids.push(el('div',{class:'note',text:n}));
  kids.push(el('h2',{text:`Top contexts (by ${META.context_order})`}));
  kids.push(p.ctx.length?table(['weight',META.rank_ordered?'rank':'slot','context','sequence · domain · segment · step','×'],
    p.ctx.map(c=>[fmt(c[8],3),c[9],el('span',{class:'ctx'},c[0],el('span',{class:'hit',text:c[1]}),c[2]),
      `${c[3]} · ${c[4]} · ${c[5]}`+(c[6]>=0?` · step ${c[6]}`:''),c[10]])):el('p',{text:'no selected token is routed here'}));
  const tok=r=>el('span',{class:'tok',text:r[0]});
  kids.push(el('div',{class:'cols'},
    el('div',{},el('h2',{text:'Tokens by lift'}),table(['token','here','lift','VS','in selection'],p.lift.map(r=>[tok(r),r[1],fmt(r[5]),fmt(r[4]),r[3]]))),
    el('div',{},el('h2',{text:'Most frequent tokens'}),table(['token','here','frequency','lift'],p.freq.map(r=>[tok(r),r[1],pct(r[2]),fmt(r[5])])))));
  const mx=rows=>Math.max(1e-9,...rows.map(r=>Math.max(r[4]||r[2],r[2],r[5])));
  kids.push(el('div',{class:'cols'},el('div',{},el('h2',{text:'Share by domain vs base rate'}),bars(p.dom,mx(p.dom))),
    el('div',{},el('h2',{text:'Share by segment kind vs base rate'}),bars(p.seg,mx(p.seg)))));
  const wl=p.wh.map((_,i)=>{const a=p.wr[0],b=p.wr[1],s=(b-a)/p.wh.length;return `${fmt(a+i*s,2)}–${fmt(a+(i+1)*s,2)}`;});
  kids.push(el('div',{class:'cols'},el('div',{},el('h2',{text:META.rank_ordered?'Router rank (1 = first choice)':'Top-k slot'}),
      hist(p.rank,p.rank.map((_,i)=>String(i+1)))),
    el('div',{},el('h2',{text:'Gate weight'}),p.wh.length?hist(p.wh,wl):el('p',{text:'not available: this store has no gate weights'}))));
  kids.push(el('div',{class:'cols'},el('div',{},el('h2',{text:'Co-activated (same layer)'}),neighbours(p.co)),
    el('div',{},el('h2',{text:'Predecessors (layer before)'}),neighbours(p.pre)),
    el('div',{},el('h2',{text:'Successors (layer after)'}),neighbours(p.suc))));
  kids.push(el('p',{class:'sub',text:'Formulas: lift = P(token | here) / P(token | selection), add-one smoothed; VS = count here / count in selection '+
    '(OLMoE vocabulary specialisation); shares with 95% percentile bootstrap intervals over sequences; neighbour lift = share / its load.'}));
  root.replaceChildren(...kids);
}
window.addEventListener('hashchange',render);
</script>
<script src="data/meta.js"></script><script>render();</script>
</body></html>
"""
)
