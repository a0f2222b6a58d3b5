// ICE servers as the server hands them to the page, and their failures in
// words: no DOM here, so that node runs it in the tests too.

// An RTCPeerConnectionIceErrorEvent in words a viewer can act on: STUN
// error codes (RFC 8489 §14.8), and 7xx, which the WebRTC spec gives to a
// server that could not be reached.
export function describeIceError({ url, errorCode, errorText }) {
  const server = url.startsWith("turn") ? "the TURN server" : "the STUN server";
  if (errorCode === 401 || errorCode === 403) {
    return `${server} ${url} refused the credentials (${errorCode} ${errorText}): they are `
      + "wrong or expired; the server's ice_servers must match the TURN server's";
  }
  if (errorCode >= 700 && errorCode < 800) {
    return `cannot reach ${server} ${url} (${errorText || errorCode}): is it running, and `
      + "open to this network?";
  }
  return `${server} ${url} answered ${errorCode} ${errorText}`;
}

// RFC 8288 Link header, as WHIP servers send ICE servers (RFC 9725 §4.6):
// <turn:turn.example.net?transport=udp>; rel="ice-server"; username="u"; credential="p"
// Parameter values are tokens or quoted strings (RFC 9110 §5.6.4: \ escapes).
export function parseIceServers(link) {
  const servers = [];
  for (const part of (link ?? "").split(/,(?=\s*<)/)) {
    const match = part.match(/^\s*<([^>]*)>(.*)$/);
    if (!match) continue;
    const params = {};
    const param = /;\s*([\w-]+)\s*=\s*(?:"((?:[^"\\]|\\.)*)"|([^;\s]*))/g;
    for (const [, name, quoted, token] of match[2].matchAll(param)) {
      params[name.toLowerCase()] = quoted !== undefined ? quoted.replace(/\\(.)/g, "$1") : token;
    }
    if (params.rel !== "ice-server") continue;
    const server = { urls: match[1] };
    if (params.username) server.username = params.username;
    if (params.credential) server.credential = params.credential;
    servers.push(server);
  }
  return servers;
}
