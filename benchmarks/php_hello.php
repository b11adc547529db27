<?php
// bench_worker.py's PHP-FPM variant: the demo app's answer, with its length
// (as fcgi-worker sends it), so that nginx need not chunk it.
$body = 'ProcessId: ' . getmypid() . "\n";
header('Content-Type: text/plain');
header('Content-Length: ' . strlen($body));
echo $body;
