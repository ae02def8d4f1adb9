// Runs contrib/cloudflare-email-worker.js as Cloudflare Email Routing would, under node:
//   node tests/cfworker.mjs WORKER.js COLLECTOR_URL RAW_TOKEN MESSAGE.eml
// The message object has what the worker uses: raw (a ReadableStream) and setReject().
// Prints one JSON line: {"result": "accepted"|"threw", "rejected": reason|null, "error": ...}.
import { readFileSync } from "node:fs";

const [workerPath, url, token, messagePath] = process.argv.slice(2);
const source = readFileSync(workerPath, "utf8");
const module = await import("data:text/javascript;base64," + Buffer.from(source).toString("base64"));
const message = {
  raw: new Blob([readFileSync(messagePath)]).stream(),
  rejected: null,
  setReject(reason) {
    this.rejected = reason;
  },
};
try {
  await module.default.email(message, { COLLECTOR_URL: url, RAW_TOKEN: token }, {});
  console.log(JSON.stringify({ result: "accepted", rejected: message.rejected }));
} catch (error) {
  console.log(JSON.stringify({ result: "threw", rejected: message.rejected, error: error.message }));
}
