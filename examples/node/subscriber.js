// Subscribe to sensord's events from Node.js: a starting point for a SIEM integration.
//
//   npm install          (in this folder: @grpc/grpc-js and @grpc/proto-loader)
//   node subscriber.js --socket /run/sensor/sensord.sock --min-severity medium
//
// --proto names the folder with sensor/v1/sensor.proto (default: the repository's proto/proto).
//
// Each event arrives once, in order, with its sequence number; keep the last one and pass it
// as --since after a restart to miss nothing. Prints one line per event: the JSON contract,
// with `seq` first (the same line `sensorctl watch -o json` prints).

'use strict';

const path = require('node:path');
const { parseArgs } = require('node:util');
const grpc = require('@grpc/grpc-js');
const protoLoader = require('@grpc/proto-loader');

const { values: args } = parseArgs({
  options: {
    socket: { type: 'string', default: '/run/sensor/sensord.sock' },
    proto: { type: 'string', default: path.join(__dirname, '..', '..', 'proto', 'proto') },
    since: { type: 'string', default: '0' },
    'min-severity': { type: 'string', default: 'info' },
    sni: { type: 'string', multiple: true, default: [] },
    count: { type: 'string', default: '0' },
  },
});

const definition = protoLoader.loadSync('sensor/v1/sensor.proto', {
  includeDirs: [args.proto],
  keepCase: true,
  longs: String,
  enums: String,
});
const { Sensor } = grpc.loadPackageDefinition(definition).sensor.v1;
const client = new Sensor(`unix:${args.socket}`, grpc.credentials.createInsecure());

const call = client.Watch({
  filter: { min_severity: `SEVERITY_${args['min-severity'].toUpperCase()}`, sni: args.sni },
  since_seq: args.since,
});
let seen = 0;
call.on('data', (event) => {
  // seq is a uint64: a string here, a BigInt-safe number in the line.
  const line = JSON.stringify({ seq: Number(event.seq), ...JSON.parse(event.json) });
  process.stdout.write(`${line}\n`);
  seen += 1;
  if (seen === Number(args.count)) {
    call.cancel();
    client.close();
  }
});
call.on('error', (err) => {
  if (err.code !== grpc.status.CANCELLED) {
    console.error(`sensord: ${err.message}`);
    process.exitCode = 1;
  }
});
