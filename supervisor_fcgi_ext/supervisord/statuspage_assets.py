"""The status page's inline CSS and script: self-contained, nothing fetched
from elsewhere (supervisord hosts often reach no internet).

SCRIPT draws the same elements as statuspage.render_pool, from
/fcgi/status.json; the browser test compares the two drawings.
"""

__all__ = ['STYLE', 'SCRIPT']

STYLE = """
body{font:14px/1.4 system-ui,sans-serif;margin:0 auto;max-width:1200px;padding:8px;
color:#222;background:#fafafa}
h1{font-size:20px;margin:4px 0}h2{font-size:17px;margin:8px 0 4px}
h2 small{font-weight:normal;color:#555}nav a{margin-right:8px}
#note{color:#555;margin:4px 0}body.stale #note{color:#b00;font-weight:bold}
body.stale main{opacity:.55}
.pool{background:#fff;border:1px solid #ddd;border-radius:6px;padding:8px;margin:10px 0}
.figures{display:grid;grid-template-columns:repeat(auto-fill,minmax(300px,1fr));
gap:2px 16px;margin:4px 0}
.figures div{display:flex;gap:8px}.figures dt{color:#555;min-width:90px}
.figures dd{margin:0}
.bar{display:inline-block;width:80px;height:10px;background:#e6e6e6;
border-radius:3px;vertical-align:middle;overflow:hidden}
.bar span{display:block;height:100%;background:#4a90d9}
.bar.queue span{background:#e08a00}
.sock{font-size:12px;padding:1px 6px;border-radius:8px;background:#dfd}
.sock-closed{background:#fdd}
.wrap{overflow-x:auto}
table{border-collapse:collapse;width:100%;font-variant-numeric:tabular-nums}
th,td{text-align:left;padding:3px 6px;border-bottom:1px solid #eee;white-space:nowrap}
td[data-label=request]{white-space:normal;word-break:break-all;max-width:360px}
.st{padding:0 6px;border-radius:8px;background:#eee}
.st-idle{background:#dfd}.st-running,.st-reading,.st-finishing{background:#cde4ff}
.st-starting{background:#ffd}.st-stopped,.st-none{background:#eee;color:#777}
.st-frozen{background:#fcc}
tr.slow{background:#fff3d6}tr.stuck{background:#ffd6d6;font-weight:bold}
tr.slow td[data-label=elapsed],tr.stuck td[data-label=elapsed]{color:#b00}
.warnings{color:#b00;margin:4px 0}.error{color:#b00;font-weight:bold}
@media (max-width:640px){
 thead{display:none}table,tbody,tr,td{display:block;width:auto}
 tr{border:1px solid #ddd;border-radius:4px;margin:6px 0;padding:4px}
 td{border:0;padding:1px 4px;white-space:normal}
 td:before{content:attr(data-label);display:inline-block;min-width:72px;color:#777}
 td:has(>[data-field]:empty){display:none}
}
"""

SCRIPT = r"""
(function(){
var cfg=JSON.parse(document.getElementById('config').textContent);
var prev=null;
var COLS=['name','pid','state','requests','rate','share','request','elapsed',
 'last','cpu','memory'];
var BUSY={reading:1,running:1,finishing:1};
// the JSON's text is already safe_text'ed by the server: escape for HTML only
function esc(v){return String(v).replace(/&/g,'&amp;').replace(/</g,'&lt;').replace(/>/g,'&gt;')
 .replace(/"/g,'&quot;').replace(/'/g,'&#x27;');}
function fig(v){return v===-1?'-':String(v);}
function dur(us){return us<1000?us+' \u00b5s':us<1e6?Math.floor(us/1000)+' ms':
 (us/1e6).toFixed(1)+' s';}
function mib(n){return n>0?(n/1048576).toFixed(1)+' MiB':'-';}
function f(name,v){return '<span data-field="'+name+'">'+esc(v)+'</span>';}
function bar(part,whole,kind){
 var p=whole<=0||part<=0?0:Math.min(100,Math.round(100*part/whole));
 return '<span class="bar '+kind+'"><span style="width:'+p+'%"></span></span>';}
function rate(now,old,dt){
 if(old===undefined||dt<=0||now<old)return '-';
 return ((now-old)/dt).toFixed(1);}
function cls(p){
 if(!BUSY[p.worker_state])return '';
 var s=p.request_duration/1e6,x=p.requests_source==='exact';
 return x&&s>=10*cfg.slow?'stuck':x&&s>=cfg.slow?'slow':'busy';}
function row(p,largest,old,dt){
 var busy=!!BUSY[p.worker_state],exact=p.requests_source==='exact';
 var req=(p.request_method+' '+p.request_uri).trim();
 var last=p.last_request_duration!==undefined?p.last_request_duration:
  (busy?null:p.request_duration);
 var ws=p.worker_state||'-';
 var cells=[f('name',p.name),f('pid',p.pid||'-'),
  '<span class="st st-'+esc(p.worker_state||'none')+'" data-field="worker_state">'+
   esc(ws)+'</span>',
  f('requests',p.requests),
  '<span class="rate" data-rate="requests">'+
   (old?rate(p.requests,old.w[p.pid],dt):'-')+'</span>',
  bar(p.requests,largest,'share'),f('request',busy?req:''),
  f('elapsed',busy&&exact?dur(p.request_duration):''),
  f('last',exact&&last!==null?dur(last):''),
  f('cpu',exact?Math.round(p.last_request_cpu)+'%':''),
  f('memory',mib(p.last_request_memory))];
 var tds='';
 for(var i=0;i<cells.length;i++)tds+='<td data-label="'+COLS[i]+'">'+cells[i]+'</td>';
 return '<tr class="w '+cls(p)+'" data-pid="'+p.pid+'">'+tds+'</tr>';}
function figures(p,old,dt){
 var r=function(k){return '<span class="rate" data-rate="'+k+'">'+
  (old?rate(p[k],old[k],dt):'-')+' /s</span>';};
 var rows=[['listen queue',bar(p.listen_queue,p.listen_queue_len,'queue')+' '+
   f('listen_queue',fig(p.listen_queue))+' of '+f('listen_queue_len',
   fig(p.listen_queue_len))+' backlog'],
  ['queue peak',f('max_listen_queue',p.max_listen_queue)+', drops '+
   f('listen_drops',fig(p.listen_drops))],
  ['processes',f('active_processes',p.active_processes)+' active, '+
   f('idle_processes',p.idle_processes)+' idle, '+f('total_processes',
   p.total_processes)+' running of '+f('limit',p.processes.length)],
  ['requests',f('requests',p.requests)+' ('+f('requests_source',p.requests_source)+
   '), '+r('requests')],
  ['accepted',f('accepted_conn',p.accepted_conn)+', '+r('accepted_conn')],
  ['fairness',f('fairness',p.fairness)+', balance '+f('balance',p.balance)],
  ['slow / ended',f('slow_requests',p.slow_requests)+' / '+
   f('terminated_requests',p.terminated_requests)]];
 return rows.map(function(x){return '<div><dt>'+x[0]+'</dt><dd>'+x[1]+
  '</dd></div>';}).join('');}
function pool(p,old,dt){
 var largest=0;p.processes.forEach(function(w){largest=Math.max(largest,w.requests);});
 var s=p.socket_open?'open':'closed';
 return '<section class="pool" data-pool="'+esc(p.name)+'"><h2><a href="?pool='+
  esc(encodeURIComponent(p.name))+'">'+f('name',p.name)+'</a> <small>'+
  f('socket',p.socket)+'</small> <span class="sock sock-'+s+'">socket '+s+
  '</span></h2><dl class="figures">'+figures(p,old,dt)+
  '</dl><div class="wrap"><table class="workers"><thead><tr>'+
  COLS.map(function(c){return '<th>'+c+'</th>';}).join('')+'</tr></thead><tbody>'+
  p.processes.map(function(w){return row(w,largest,old,dt);}).join('')+
  '</tbody></table></div><ul class="warnings">'+
  p.warnings.map(function(w){return '<li>'+esc(w)+'</li>';}).join('')+
  '</ul></section>';}
function reading(pools,t){
 var r={t:t,pools:{}};
 pools.forEach(function(p){var w={};
  p.processes.forEach(function(x){if(x.pid)w[x.pid]=x.requests;});
  r.pools[p.name]={requests:p.requests,accepted_conn:p.accepted_conn,w:w};});
 return r;}
function say(text,stale){
 document.getElementById('live').textContent=text;
 document.body.className=stale?'stale':'';}
function draw(pools){
 var t=Date.now()/1000,dt=prev?t-prev.t:0;
 var html=pools.map(function(p){return pool(p,prev&&prev.pools[p.name],dt);}).join('');
 document.getElementById('pools').innerHTML=html||
  '<p class="error">no fcgi-program pools configured</p>';
 if(!cfg.pool)document.querySelector('nav').innerHTML=
  '<a href="status">all pools</a> '+pools.map(function(p){
  return '<a href="?pool='+esc(encodeURIComponent(p.name))+'">'+esc(p.name)+'</a>';
  }).join(' ');
 document.getElementById('stamp').textContent=new Date().toTimeString().slice(0,8);
 say(prev?'live, every '+cfg.refresh/1000+' s':'live; rates from the next reading',
  false);
 prev=reading(pools,t);}
function tick(){
 // from the page's own address without any user:password@ in it: fetch()
 // refuses those; the browser sends the credentials it was given for the page
 var url=location.protocol+'//'+location.host+location.pathname.replace(/[^\/]*$/,'')+
  'status.json'+(cfg.pool!==null?'?pool='+encodeURIComponent(cfg.pool):'');
 fetch(url,{cache:'no-store',credentials:'same-origin'}).then(function(r){
  if(r.status===404&&cfg.pool!==null){
   document.getElementById('pools').innerHTML='<p class="error">pool '+
    esc(cfg.pool)+' is gone (removed?); watching for it</p>';
   prev=null;say('pool not found',true);return;}
  if(!r.ok)throw new Error('supervisord answered HTTP '+r.status);
  return r.json().then(function(d){draw(Array.isArray(d)?d:[d]);});
 }).catch(function(e){
  // fetch() fails with a TypeError when there is no answer at all
  say((e instanceof TypeError?'cannot reach supervisord ('+e.message+')':e.message)+
   '; retrying',true);
 }).then(function(){setTimeout(tick,cfg.refresh);});}
tick();
})();
"""
