import net from 'node:net';

/**
 * Which hosts outbound requests (the http tool, webhooks, callbacks) may reach.
 *
 * A URL's host must match the allowlist. Then, whatever the allowlist says, the address it
 * resolves to is checked at connect time (so DNS cannot be swapped between check and use):
 * - cloud metadata addresses are always refused;
 * - private, loopback, link-local and other special addresses are refused unless the allowlist
 *   names them explicitly (an IP, a CIDR containing the address, or the exact hostname, not a
 *   `*.` wildcard), on the port being connected to; with `privateNames: 'refuse'`
 *   (HTTP_TOOL_PRIVATE_NAMES) an exact hostname no longer counts, so a name whose DNS answer
 *   changes to a private address cannot lead inside: only IP and CIDR entries open those;
 * - an entry without a port allows only the scheme's default port (80 for http, 443 for https):
 *   `api.example.com` must not open `http://api.example.com:6379/` to a Redis behind the name;
 * - an IPv6 address that reaches an IPv4 host (IPv4-mapped `::ffff:0:0/96`, NAT64 `64:ff9b::/96`)
 *   is judged as that IPv4 address, and so is an IPv4-translated one (`::ffff:0:0:0/96`, RFC
 *   2765: `::ffff:0:7f00:1` is 127.0.0.1); the tunnelling forms (6to4 `2002::/16`, Teredo `2001::/32`,
 *   IPv4-compatible `::/96`, local-use NAT64 `64:ff9b:1::/48`) count as special addresses, and
 *   never lead to a metadata address.
 */

interface HostEntry {
  kind: 'host';
  host: string;
  port?: number;
}
interface SuffixEntry {
  kind: 'suffix';
  suffix: string;
  port?: number;
}
interface NetworkEntry {
  kind: 'network';
  list: net.BlockList;
  port?: number;
}
type Entry = HostEntry | SuffixEntry | NetworkEntry;

const METADATA = new net.BlockList();
METADATA.addAddress('169.254.169.254');
METADATA.addAddress('169.254.170.2'); // ECS task metadata
METADATA.addAddress('100.100.100.200'); // Alibaba Cloud
METADATA.addAddress('fd00:ec2::254', 'ipv6');

const SPECIAL = new net.BlockList();
for (const [network, prefix] of [
  ['0.0.0.0', 8],
  ['10.0.0.0', 8],
  ['100.64.0.0', 10],
  ['127.0.0.0', 8],
  ['169.254.0.0', 16],
  ['172.16.0.0', 12],
  ['192.0.0.0', 24],
  ['192.168.0.0', 16],
  ['198.18.0.0', 15],
  ['224.0.0.0', 4],
  ['240.0.0.0', 4],
] as const) {
  SPECIAL.addSubnet(network, prefix, 'ipv4');
}
for (const [network, prefix] of [
  ['::', 96], // unspecified, loopback, IPv4-compatible (deprecated)
  ['64:ff9b:1::', 48], // local-use NAT64 (RFC 8215): where it leads is the network's choice
  ['2001::', 32], // Teredo
  ['2002::', 16], // 6to4
  ['fc00::', 7],
  ['fe80::', 10],
  ['fec0::', 10], // site-local (deprecated, RFC 3879), still routed privately where used
  ['ff00::', 8],
] as const) {
  SPECIAL.addSubnet(network, prefix, 'ipv6');
}

function family(address: string): 'ipv4' | 'ipv6' {
  return net.isIPv6(address) ? 'ipv6' : 'ipv4';
}

/** The eight 16-bit groups of an IPv6 address (which may end in dotted IPv4 notation). */
function groups(address: string): number[] {
  let text = address.toLowerCase();
  const dotted = /(\d+)\.(\d+)\.(\d+)\.(\d+)$/.exec(text);
  if (dotted) {
    const [a, b, c, d] = dotted.slice(1).map(Number) as [number, number, number, number];
    text = `${text.slice(0, dotted.index)}${((a << 8) | b).toString(16)}:${((c << 8) | d).toString(16)}`;
  }
  const [head = '', tail] = text.split('::');
  const parse = (part: string) => (part ? part.split(':').map((group) => parseInt(group, 16)) : []);
  const left = parse(head);
  const right = parse(tail ?? '');
  return [...left, ...new Array<number>(8 - left.length - right.length).fill(0), ...right];
}

const ipv4 = (high: number, low: number) => `${high >> 8}.${high & 0xff}.${low >> 8}.${low & 0xff}`;

/**
 * The address the rules judge: an IPv6 address that reaches an IPv4 host is that IPv4 address
 * (`::ffff:10.0.0.1` and `64:ff9b::a00:1` are 10.0.0.1). A zone (`fe80::1%eth0`) is dropped.
 */
function canonical(raw: string): string {
  const address = raw.replace(/%.*$/, '');
  if (!net.isIPv6(address)) return address;
  const g = groups(address);
  const zeros = (from: number, to: number) => g.slice(from, to).every((group) => group === 0);
  if (zeros(0, 5) && g[5] === 0xffff) return ipv4(g[6]!, g[7]!);
  if (zeros(0, 4) && g[4] === 0xffff && g[5] === 0) return ipv4(g[6]!, g[7]!);
  if (g[0] === 0x64 && g[1] === 0xff9b && zeros(2, 6)) return ipv4(g[6]!, g[7]!);
  return address;
}

/** IPv4 addresses a tunnelling IPv6 address carries: 6to4's relay target, Teredo's server and client, IPv4-compatible. */
function tunnelled(address: string): string[] {
  if (!net.isIPv6(address)) return [];
  const g = groups(address);
  if (g[0] === 0x2002) return [ipv4(g[1]!, g[2]!)];
  if (g[0] === 0x2001 && g[1] === 0) return [ipv4(g[2]!, g[3]!), ipv4(g[6]! ^ 0xffff, g[7]! ^ 0xffff)];
  if (g.slice(0, 6).every((group) => group === 0)) return [ipv4(g[6]!, g[7]!)];
  return [];
}

function isMetadata(address: string): boolean {
  return [address, ...tunnelled(address)].some((candidate) => METADATA.check(candidate, family(candidate)));
}

function parseEntry(raw: string): Entry {
  const text = raw.trim().toLowerCase();
  let host = text;
  let port: number | undefined;
  const bracketed = /^\[([^\]]+)\](?::(\d+))?$/.exec(text);
  if (bracketed) {
    host = bracketed[1]!;
    port = bracketed[2] ? Number(bracketed[2]) : undefined;
  } else if (!net.isIPv6(text.split('/')[0]!)) {
    const withPort = /^(.+):(\d+)$/.exec(text);
    if (withPort) {
      host = withPort[1]!;
      port = Number(withPort[2]);
    }
  }
  const [address, prefix] = host.split('/');
  if (net.isIP(address!)) {
    const list = new net.BlockList();
    if (prefix !== undefined) list.addSubnet(address!, Number(prefix), family(address!));
    else list.addAddress(address!, family(address!));
    return { kind: 'network', list, ...(port !== undefined ? { port } : {}) };
  }
  if (host.startsWith('*.')) return { kind: 'suffix', suffix: host.slice(1), ...(port !== undefined ? { port } : {}) };
  return { kind: 'host', host, ...(port !== undefined ? { port } : {}) };
}

/** Whether an exact hostname on the allowlist may resolve to a private address (HTTP_TOOL_PRIVATE_NAMES). */
export type PrivateNames = 'allow' | 'refuse';

export class HostPolicy {
  private readonly entries: Entry[];

  constructor(
    allowed: readonly string[],
    private readonly privateNames: PrivateNames = 'allow',
  ) {
    this.entries = allowed.map(parseEntry);
  }

  /** `defaults`: the ports an entry without one allows (the URL's scheme default; 80 and 443 when only the port is known). */
  private portMatches(entry: Entry, port: number, defaults: readonly number[]): boolean {
    return entry.port === undefined ? defaults.includes(port) : entry.port === port;
  }

  /** Why the URL may not be requested, or undefined when its host is allowlisted. */
  checkUrl(url: URL): string | undefined {
    if (url.protocol !== 'http:' && url.protocol !== 'https:') return `protocol ${url.protocol} is not allowed`;
    if (url.username || url.password) return 'credentials in the URL are not allowed';
    const host = url.hostname.replace(/^\[|\]$/g, '').toLowerCase();
    const defaultPort = url.protocol === 'https:' ? 443 : 80;
    const port = Number(url.port || defaultPort);
    const defaults = [defaultPort];
    if (net.isIP(host)) {
      const address = canonical(host);
      if (isMetadata(address)) return `${host} is a cloud metadata address`;
      const listed = this.entries.some(
        (entry) => entry.kind === 'network' && this.portMatches(entry, port, defaults) && entry.list.check(address, family(address)),
      );
      return listed ? undefined : `host ${host} is not on HTTP_TOOL_ALLOWED_HOSTS`;
    }
    const listed = this.entries.some(
      (entry) =>
        this.portMatches(entry, port, defaults) && ((entry.kind === 'host' && entry.host === host) || (entry.kind === 'suffix' && host.endsWith(entry.suffix))),
    );
    return listed ? undefined : `host ${host} is not on HTTP_TOOL_ALLOWED_HOSTS`;
  }

  /**
   * Why a connection to `address` (resolved from `hostname`) on `port` is refused, or undefined.
   * `defaultPort`: the URL's scheme default, which an entry without a port allows (both 80 and
   * 443 when not given).
   */
  checkAddress(hostname: string, rawAddress: string, port: number, defaultPort?: number): string | undefined {
    const defaults = defaultPort === undefined ? [80, 443] : [defaultPort];
    const address = canonical(rawAddress);
    if (isMetadata(address)) return `${hostname} resolves to a cloud metadata address`;
    if (!SPECIAL.check(address, family(address))) return undefined;
    const name = hostname.toLowerCase();
    const explicit = this.entries.some(
      (entry) =>
        this.portMatches(entry, port, defaults) &&
        ((entry.kind === 'network' && entry.list.check(address, family(address))) ||
          (entry.kind === 'host' && entry.host === name && this.privateNames === 'allow')),
    );
    if (explicit) return undefined;
    if (this.privateNames === 'refuse' && this.entries.some((entry) => entry.kind === 'host' && entry.host === name)) {
      return `${hostname} resolves to ${address}, a private or link-local address: HTTP_TOOL_PRIVATE_NAMES=refuse lets only IP or CIDR entries reach those`;
    }
    return `${hostname} resolves to ${address}, a private or link-local address that is not explicitly allowlisted on port ${port}`;
  }
}

const cache = { allow: new WeakMap<readonly string[], HostPolicy>(), refuse: new WeakMap<readonly string[], HostPolicy>() };

/** One policy per allowlist (the config's array) and HTTP_TOOL_PRIVATE_NAMES, built once. */
export function hostPolicyFor(allowed: readonly string[], privateNames: PrivateNames = 'allow'): HostPolicy {
  let policy = cache[privateNames].get(allowed);
  if (!policy) {
    policy = new HostPolicy(allowed, privateNames);
    cache[privateNames].set(allowed, policy);
  }
  return policy;
}
