// Cloudflare Email Worker: hand each message to smime-collector's POST /raw, byte for byte.
// Settings: COLLECTOR_URL (https://collector.example.com/raw) and the secret RAW_TOKEN (raw-token).
// A 503 throws, so Cloudflare answers the sending MTA with a temporary failure and it retries;
// a rejected message is refused in the SMTP session, so no bounce goes to a forged sender.
export default {
  async email(message, env) {
    const response = await fetch(env.COLLECTOR_URL, {
      method: "POST",
      headers: { "Content-Type": "message/rfc822", Authorization: `Bearer ${env.RAW_TOKEN}` },
      body: await new Response(message.raw).arrayBuffer(),
    });
    if (response.status !== 200) {
      throw new Error(`smime-collector answered ${response.status}; retry later`);
    }
    const verdict = await response.json();
    if (verdict.outcome === "rejected") {
      message.setReject(`${verdict.reason}: no certificate collected`);
    }
  },
};
