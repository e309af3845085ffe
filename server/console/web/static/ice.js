// ICE for the pages: the servers come from the server (/api/ice-servers),
// fetched before the offer is built, since nothing trickles: a relay
// candidate must be in the offer. With --turn-secret each fetch gets
// credentials minted for this page that expire. ?relay=1 forces the relay
// (iceTransportPolicy "relay"), for testing and for privacy.

export async function iceConfiguration(params = new URLSearchParams(location.search)) {
  const response = await fetch("/api/ice-servers", { cache: "no-store" });
  // 404: a server from before this endpoint, which hands out none.
  if (!response.ok && response.status !== 404) {
    throw new Error(`ICE servers: ${response.status} ${response.statusText}`);
  }
  const { iceServers } = response.ok ? await response.json() : { iceServers: [] };
  const relay = params.get("relay") === "1";
  return { iceServers, iceTransportPolicy: relay ? "relay" : "all" };
}

// The candidate pair in use, this browser's side first:
// {local, remote, relayTransport, path: "relay (udp) -> host"}, or null.
export async function selectedPath(pc) {
  const stats = await pc.getStats();
  let pair = null;
  stats.forEach((report) => {
    if (report.type === "transport" && report.selectedCandidatePairId) {
      pair = stats.get(report.selectedCandidatePairId) ?? pair;
    }
  });
  if (!pair) return null;
  const local = stats.get(pair.localCandidateId);
  const remote = stats.get(pair.remoteCandidateId);
  const relayTransport = local?.candidateType === "relay" ? local.relayProtocol ?? null : null;
  const here = relayTransport ? `${local.candidateType} (${relayTransport})` : local?.candidateType;
  return {
    local: local?.candidateType ?? null,
    remote: remote?.candidateType ?? null,
    relayTransport,
    path: `${here ?? "?"} -> ${remote?.candidateType ?? "?"}`,
  };
}

// One line for a connection that never came up, naming ICE.
export function iceFailure(pc, configuration) {
  const turn = configuration.iceServers.some((s) => [].concat(s.urls).some((u) => u.startsWith("turn")));
  const relayOnly = configuration.iceTransportPolicy === "relay";
  if (relayOnly && !turn) return "ICE failed: ?relay=1 needs a TURN server, and the server hands out none";
  const hint = turn
    ? "is the TURN server reachable from this browser, and from the server?"
    : "no direct route to the server, and the server hands out no TURN server (--ice-server)";
  return `ICE failed (${pc.iceConnectionState}): ${hint}`;
}
