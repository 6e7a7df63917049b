// uWebSockets.js as a peer of wsgate's fan-out benchmark (`fanout scale`,
// benches/fanout.sh PEERS=uws). One thread, one event loop: the fair
// comparison is `wsgate --cores 1`.
//
// It speaks the part of wsgate's line protocol (README.md, "The gateway protocol") that
// the harness drives, on /ws:
//
//   on open       → `hello <id> new <node>`  (and a `WS_SESSION_ID` cookie on
//                   the 101, which the harness's client expects; nothing can be
//                   resumed with it)
//   sub <topic>   → uWS subscribe, then `ok sub <topic> <seq>` (the topic's
//                   last sequence number)
//   unsub <topic> → uWS unsubscribe, `ok unsub <topic>`
//   pub <topic> <payload>
//                 → the topic's next sequence number; uWS `app.publish(topic,
//                   "msg <topic> <seq> <payload>")` to its subscribers (the
//                   publisher too when subscribed), then `ok pub <topic> <seq>`
//   anything else → `err unsupported <command>` (no presence, `who`, resume,
//                   replay or auth: the harness does not ask for them)
//
// and plain echo (text or binary, as received) on the --echo-path.
//
// It takes wsgate's flags so the harness can start it like wsgate (via
// wsgate-compat.sh): --listen and --admin-listen (HOST:PORT, port 0 = any),
// --echo-path, --max-message-size, --node-id; --cores must be 1; the others
// are accepted and ignored. The admin listener answers every request with
// 404: this peer exports no metrics. When both listen, one line on stderr:
// `uws-peer event=listening listen=ADDR admin=ADDR pid=PID`.
'use strict';

const uWS = require('@btc-vision/uwebsockets.js');

function die(msg) {
    process.stderr.write(`uws-peer: ${msg}\n`);
    process.exit(2);
}

function size(v) {
    const m = /^(\d+)\s*(B|KiB|MiB|GiB|KB|MB|GB)?$/i.exec(v);
    if (!m) die(`bad size ${v}`);
    const unit = (m[2] || 'B').toLowerCase();
    const mul = { b: 1, kib: 1024, mib: 1 << 20, gib: 1 << 30, kb: 1e3, mb: 1e6, gb: 1e9 }[unit];
    return Number(m[1]) * mul;
}

function hostPort(v) {
    const i = v.lastIndexOf(':');
    if (i < 0) die(`bad address ${v}`);
    return [v.slice(0, i).replace(/^\[|\]$/g, ''), Number(v.slice(i + 1))];
}

const opts = {
    listen: '127.0.0.1:8080',
    admin: '127.0.0.1:9090',
    echoPath: null,
    maxMessage: 16 << 20,
    node: 'uws',
};
const args = process.argv.slice(2);
for (let i = 0; i < args.length; i++) {
    const flag = args[i];
    if (flag === '--help' || flag === '-h') {
        process.stdout.write('uws-peer: uWebSockets.js speaking the fan-out subset of wsgate\'s protocol\n' +
            'flags: --listen ADDR --admin-listen ADDR --echo-path PATH --max-message-size SIZE --node-id ID --cores 1\n');
        process.exit(0);
    }
    const v = args[++i];
    if (v === undefined) die(`${flag} needs a value`);
    switch (flag) {
        case '--listen': opts.listen = v; break;
        case '--admin-listen': opts.admin = v; break;
        case '--echo-path': opts.echoPath = v; break;
        case '--max-message-size': opts.maxMessage = size(v); break;
        case '--node-id': opts.node = v; break;
        case '--cores': if (v !== '1') die('one thread only: --cores 1'); break;
        default: break; // wsgate flags this peer has no use for (e.g. --cookie-secure)
    }
}

const wsOptions = {
    compression: uWS.DISABLED,
    maxPayloadLength: opts.maxMessage,
    // Slow subscribers are cut (the harness counts cuts), never silently skipped.
    maxBackpressure: 16 << 20,
    closeOnBackpressureLimit: true,
    idleTimeout: 120,
    sendPingsAutomatically: true,
};

const app = uWS.App();
const seqs = new Map(); // topic → last sequence number
let nextId = 0;
const SPACE = 0x20;
const decoder = new TextDecoder();

function reply(ws, text) {
    ws.send(text, false);
}

app.ws('/ws', {
    ...wsOptions,
    upgrade: (res, req, context) => {
        const id = `u${(++nextId).toString(36)}`;
        const key = req.getHeader('sec-websocket-key');
        const protocol = req.getHeader('sec-websocket-protocol');
        const extensions = req.getHeader('sec-websocket-extensions');
        res.cork(() => {
            res.writeStatus('101 Switching Protocols');
            res.writeHeader('Set-Cookie', `WS_SESSION_ID=${id}; Path=/; HttpOnly; SameSite=Lax`);
            res.upgrade({ id }, key, protocol, extensions, context);
        });
    },
    open: (ws) => {
        reply(ws, `hello ${ws.getUserData().id} new ${opts.node}`);
    },
    message: (ws, message, isBinary) => {
        const bytes = new Uint8Array(message);
        const sp1 = bytes.indexOf(SPACE);
        const cmd = decoder.decode(sp1 < 0 ? bytes : bytes.subarray(0, sp1));
        if (cmd === 'pub') {
            const sp2 = bytes.indexOf(SPACE, sp1 + 1);
            if (sp1 < 0 || sp2 < 0) return reply(ws, 'err bad-command pub <topic> <payload>');
            const topic = decoder.decode(bytes.subarray(sp1 + 1, sp2));
            const seq = (seqs.get(topic) || 0) + 1;
            seqs.set(topic, seq);
            const head = Buffer.from(`msg ${topic} ${seq} `);
            const payload = bytes.subarray(sp2 + 1);
            const out = Buffer.allocUnsafe(head.length + payload.length);
            head.copy(out, 0);
            out.set(payload, head.length);
            app.publish(topic, out, isBinary);
            return reply(ws, `ok pub ${topic} ${seq}`);
        }
        if (sp1 < 0) return reply(ws, `err unsupported ${cmd}`);
        const topic = decoder.decode(bytes.subarray(sp1 + 1));
        if (cmd === 'sub') {
            ws.subscribe(topic);
            return reply(ws, `ok sub ${topic} ${seqs.get(topic) || 0}`);
        }
        if (cmd === 'unsub') {
            ws.unsubscribe(topic);
            return reply(ws, `ok unsub ${topic}`);
        }
        return reply(ws, `err unsupported ${cmd}`);
    },
});

if (opts.echoPath) {
    app.ws(opts.echoPath, {
        ...wsOptions,
        message: (ws, message, isBinary) => {
            ws.send(message, isBinary);
        },
    });
}

app.any('/*', (res) => {
    res.writeStatus('404 Not Found').end('not found\n');
});

const admin = uWS.App();
admin.any('/*', (res) => {
    res.writeStatus('404 Not Found').end('the uWebSockets peer exports no metrics\n');
});

function uwsVersion() {
    const dir = require('path').join(__dirname, 'node_modules/@btc-vision/uwebsockets.js/package.json');
    try {
        return JSON.parse(require('fs').readFileSync(dir, 'utf8')).version;
    } catch (_) {
        return 'unknown';
    }
}

function listen(which, a, addr) {
    const [host, port] = hostPort(addr);
    return new Promise((resolve) => {
        a.listen(host, port, (token) => {
            if (!token) die(`cannot listen on ${addr} (${which})`);
            resolve(`${host}:${uWS.us_socket_local_port(token)}`);
        });
    });
}

(async () => {
    const l = await listen('listen', app, opts.listen);
    const a = await listen('admin', admin, opts.admin);
    process.stderr.write(`uws-peer event=listening listen=${l} admin=${a} pid=${process.pid} ` +
        `uws=${uwsVersion()} node=${process.version}\n`);
})();
