import { describe, expect, it } from 'vitest';
import { HostPolicy, hostPolicyFor } from '../../src/lib/host-policy.js';

const allowed = (policy: HostPolicy, url: string) => policy.checkUrl(new URL(url)) === undefined;

describe('HostPolicy.checkUrl', () => {
  it('matches exact host names, case-insensitively, on the scheme default port unless one is given', () => {
    const policy = new HostPolicy(['API.example.com', 'hooks.example.com:8443']);
    expect(allowed(policy, 'https://api.example.com/v1')).toBe(true);
    expect(allowed(policy, 'http://Api.Example.COM/')).toBe(true);
    expect(allowed(policy, 'http://Api.Example.COM:9000/')).toBe(false);
    expect(allowed(policy, 'https://other.example.com/')).toBe(false);
    expect(allowed(policy, 'https://example.com/')).toBe(false);
    expect(allowed(policy, 'https://hooks.example.com:8443/in')).toBe(true);
    expect(allowed(policy, 'https://hooks.example.com/in')).toBe(false);
    expect(policy.checkUrl(new URL('https://other.example.com/'))).toBe('host other.example.com is not on HTTP_TOOL_ALLOWED_HOSTS');
  });

  it('matches *. wildcards on subdomains only, not on the bare domain or look-alikes', () => {
    const policy = new HostPolicy(['*.example.com']);
    expect(allowed(policy, 'https://a.example.com/')).toBe(true);
    expect(allowed(policy, 'https://a.b.example.com/')).toBe(true);
    expect(allowed(policy, 'https://example.com/')).toBe(false);
    expect(allowed(policy, 'https://badexample.com/')).toBe(false);
    expect(allowed(policy, 'https://example.com.evil.net/')).toBe(false);
  });

  it('allows only the scheme default port for an entry without one, whatever its kind', () => {
    const policy = new HostPolicy(['api.example.com', '*.hooks.example.com', '10.0.0.0/8', '192.0.2.7', '[2001:db8::1]']);
    for (const url of ['https://api.example.com/', 'http://api.example.com/', 'http://api.example.com:80/', 'https://api.example.com:443/']) {
      expect(allowed(policy, url), url).toBe(true);
    }
    for (const url of [
      'http://api.example.com:6379/',
      'https://api.example.com:80/',
      'http://api.example.com:443/',
      'http://a.hooks.example.com:8080/',
      'http://10.0.0.1:6379/',
      'http://192.0.2.7:5432/',
      'http://[2001:db8::1]:8080/',
    ]) {
      expect(allowed(policy, url), url).toBe(false);
    }
    expect(allowed(policy, 'https://a.hooks.example.com/')).toBe(true);
    expect(allowed(policy, 'http://10.0.0.1/')).toBe(true);
  });

  it('takes the scheme default port into account for entries with a port', () => {
    const policy = new HostPolicy(['secure.example.com:443', 'plain.example.com:80', '127.0.0.1:8080']);
    expect(allowed(policy, 'https://secure.example.com/')).toBe(true);
    expect(allowed(policy, 'http://secure.example.com/')).toBe(false);
    expect(allowed(policy, 'http://plain.example.com/')).toBe(true);
    expect(allowed(policy, 'https://plain.example.com/')).toBe(false);
    expect(allowed(policy, 'http://127.0.0.1:8080/')).toBe(true);
    expect(allowed(policy, 'http://127.0.0.1:8081/')).toBe(false);
    expect(allowed(policy, 'http://127.0.0.1/')).toBe(false);
  });

  it('matches IPv4 addresses and CIDR ranges, whatever notation the URL uses', () => {
    const policy = new HostPolicy(['10.1.0.0/16', '192.0.2.7']);
    expect(allowed(policy, 'http://10.1.2.3/')).toBe(true);
    expect(allowed(policy, 'http://10.1.255.255/')).toBe(true);
    expect(allowed(policy, 'http://10.2.0.1/')).toBe(false);
    expect(allowed(policy, 'http://192.0.2.7/')).toBe(true);
    expect(allowed(policy, 'http://192.0.2.8/')).toBe(false);
    // The URL parser normalises these to 10.1.0.1 and 192.0.2.7.
    expect(allowed(policy, 'http://10.1.1/')).toBe(true);
    expect(allowed(policy, 'http://3221225991/')).toBe(true);
  });

  it('matches IPv6 addresses, bracketed entries with ports, and IPv6 ranges', () => {
    const policy = new HostPolicy(['[2001:db8::1]:8080', '2001:db8:1::/48', '::1']);
    expect(allowed(policy, 'http://[2001:db8::1]:8080/')).toBe(true);
    expect(allowed(policy, 'http://[2001:db8::1]/')).toBe(false);
    expect(allowed(policy, 'http://[2001:db8:1:ffff::5]/')).toBe(true);
    expect(allowed(policy, 'http://[2001:db8:2::5]/')).toBe(false);
    expect(allowed(policy, 'http://[::1]/')).toBe(true);
    expect(allowed(policy, 'http://[0:0:0:0:0:0:0:1]/')).toBe(true);
  });

  it('treats an IPv4-mapped IPv6 address as the IPv4 address it maps', () => {
    const policy = new HostPolicy(['127.0.0.1']);
    expect(allowed(policy, 'http://[::ffff:127.0.0.1]/')).toBe(true);
    expect(allowed(policy, 'http://[::ffff:7f00:1]/')).toBe(true);
    // IPv4-translated (::ffff:0:0:0/96) too.
    expect(allowed(policy, 'http://[::ffff:0:7f00:1]/')).toBe(true);
    expect(allowed(policy, 'http://[::ffff:10.0.0.1]/')).toBe(false);
    // Loopback by IPv6 is another address: not allowed by the IPv4 entry.
    expect(allowed(policy, 'http://[::1]/')).toBe(false);
  });

  it('always refuses cloud metadata addresses, even when allowlisted by address or range', () => {
    const policy = new HostPolicy(['169.254.169.254', '169.254.0.0/16', '100.100.100.200', 'fd00:ec2::/32', '0.0.0.0/0', '::/0']);
    for (const url of [
      'http://169.254.169.254/latest/meta-data',
      'http://169.254.170.2/v2/credentials',
      'http://100.100.100.200/latest/meta-data',
      'http://[fd00:ec2::254]/',
      'http://[::ffff:169.254.169.254]/',
      'http://2852039166/',
    ]) {
      expect(policy.checkUrl(new URL(url)), url).toMatch(/cloud metadata address/);
    }
    // Other addresses of the allowlisted ranges stay allowed.
    expect(allowed(policy, 'http://169.254.1.1/')).toBe(true);
  });

  it('judges IPv6 literals that embed an IPv4 address like that address, and refuses tunnels to metadata', () => {
    const policy = new HostPolicy(['10.0.0.5', '2002::/16', '::/96']);
    expect(allowed(policy, 'http://[64:ff9b::a00:5]/')).toBe(true);
    expect(allowed(policy, 'http://[64:ff9b::a00:6]/')).toBe(false);
    for (const url of ['http://[64:ff9b::a9fe:a9fe]/', 'http://[2002:a9fe:a9fe::]/', 'http://[::169.254.169.254]/']) {
      expect(policy.checkUrl(new URL(url)), url).toMatch(/cloud metadata address/);
    }
  });

  it('refuses other schemes and credentials in the URL', () => {
    const policy = new HostPolicy(['example.com']);
    expect(policy.checkUrl(new URL('ftp://example.com/file'))).toMatch(/protocol ftp: is not allowed/);
    expect(policy.checkUrl(new URL('file:///etc/passwd'))).toMatch(/protocol file: is not allowed/);
    expect(policy.checkUrl(new URL('https://user:pw@example.com/'))).toMatch(/credentials/);
  });

  it('refuses everything with an empty allowlist', () => {
    const policy = new HostPolicy([]);
    expect(allowed(policy, 'https://example.com/')).toBe(false);
    expect(allowed(policy, 'http://127.0.0.1/')).toBe(false);
  });
});

describe('HostPolicy.checkAddress (what a name resolved to, at connect time)', () => {
  it('lets a public address through for any allowlisted name', () => {
    const policy = new HostPolicy(['*.example.com']);
    expect(policy.checkAddress('www.example.com', '93.184.216.34', 443)).toBeUndefined();
    expect(policy.checkAddress('www.example.com', '2606:2800:220:1:248:1893:25c8:1946', 443)).toBeUndefined();
  });

  it('refuses a private, loopback or link-local address reached through a wildcard-matched name', () => {
    const policy = new HostPolicy(['*.example.com']);
    for (const address of [
      '10.0.0.5',
      '172.16.3.4',
      '192.168.1.1',
      '127.0.0.1',
      '169.254.10.10',
      '100.64.0.1',
      '0.0.0.0',
      '::1',
      'fe80::1',
      'fc00::7',
      '::ffff:192.168.1.1',
      '::ffff:7f00:1',
      '::ffff:0:7f00:1',
      '::ffff:0:a00:5',
      'fec0::1',
      'feff::1',
    ]) {
      expect(policy.checkAddress('internal.example.com', address, 443), address).toMatch(/private or link-local address that is not explicitly allowlisted/);
    }
  });

  it('allows a private address when the exact name, the address or its range is allowlisted', () => {
    expect(new HostPolicy(['internal.example.com']).checkAddress('internal.example.com', '10.0.0.5', 443)).toBeUndefined();
    expect(new HostPolicy(['*.example.com', '10.0.0.0/8']).checkAddress('internal.example.com', '10.0.0.5', 443)).toBeUndefined();
    expect(new HostPolicy(['*.example.com', '10.0.0.5']).checkAddress('internal.example.com', '10.0.0.5', 443)).toBeUndefined();
    expect(new HostPolicy(['*.example.com', '10.0.0.6']).checkAddress('internal.example.com', '10.0.0.5', 443)).toMatch(/not explicitly allowlisted/);
  });

  it('with privateNames refuse (HTTP_TOOL_PRIVATE_NAMES), an exact name no longer opens a private address; IPs and CIDRs still do', () => {
    const named = new HostPolicy(['internal.example.com'], 'refuse');
    expect(named.checkUrl(new URL('https://internal.example.com/'))).toBeUndefined();
    expect(named.checkAddress('internal.example.com', '10.0.0.5', 443)).toMatch(/HTTP_TOOL_PRIVATE_NAMES=refuse/);
    expect(named.checkAddress('internal.example.com', '::ffff:127.0.0.1', 443)).toMatch(/HTTP_TOOL_PRIVATE_NAMES=refuse/);
    expect(named.checkAddress('internal.example.com', '93.184.216.34', 443)).toBeUndefined();
    expect(new HostPolicy(['internal.example.com', '10.0.0.0/8'], 'refuse').checkAddress('internal.example.com', '10.0.0.5', 443)).toBeUndefined();
    expect(hostPolicyFor(['a.example.com'], 'refuse')).not.toBe(hostPolicyFor(['a.example.com']));
  });

  it('refuses a metadata address whatever name led to it and whatever the allowlist says', () => {
    const policy = new HostPolicy(['metadata.google.internal', '169.254.169.254', '*.example.com']);
    expect(policy.checkAddress('metadata.google.internal', '169.254.169.254', 443)).toMatch(/cloud metadata address/);
    expect(policy.checkAddress('rebind.example.com', '169.254.169.254', 443)).toMatch(/cloud metadata address/);
    expect(policy.checkAddress('rebind.example.com', '::ffff:169.254.169.254', 443)).toMatch(/cloud metadata address/);
    expect(policy.checkAddress('rebind.example.com', 'fd00:ec2::254', 443)).toMatch(/cloud metadata address/);
  });
  it('holds an allowlist entry with a port to that port when judging a private address', () => {
    // The URL check lets the wildcard through on any port; the entries that make 10.0.0.5 (or
    // the name) acceptable only cover port 8080.
    for (const allow of ['10.0.0.5:8080', '10.0.0.0/24:8080', 'internal.example.com:8080']) {
      const policy = new HostPolicy(['*.example.com', allow]);
      expect(policy.checkAddress('internal.example.com', '10.0.0.5', 8080), allow).toBeUndefined();
      expect(policy.checkAddress('internal.example.com', '10.0.0.5', 9000), allow).toMatch(/not explicitly allowlisted on port 9000/);
    }
    // Without a port, only the scheme's default: 443 or 80 (both when the scheme is not said).
    const bare = new HostPolicy(['*.example.com', 'internal.example.com']);
    expect(bare.checkAddress('internal.example.com', '10.0.0.5', 443, 443)).toBeUndefined();
    expect(bare.checkAddress('internal.example.com', '10.0.0.5', 80, 443)).toMatch(/not explicitly allowlisted on port 80/);
    expect(bare.checkAddress('internal.example.com', '10.0.0.5', 80)).toBeUndefined();
    expect(bare.checkAddress('internal.example.com', '10.0.0.5', 6379)).toMatch(/not explicitly allowlisted on port 6379/);
    const loopback = new HostPolicy(['localhost:8080']);
    expect(loopback.checkAddress('localhost', '127.0.0.1', 8080)).toBeUndefined();
    expect(loopback.checkAddress('localhost', '127.0.0.1', 6379)).toMatch(/not explicitly allowlisted on port 6379/);
  });

  it('judges NAT64 addresses (64:ff9b::/96) as the IPv4 address they reach', () => {
    const policy = new HostPolicy(['*.example.com']);
    for (const address of ['64:ff9b::a00:5', '64:ff9b::10.0.0.5', '64:ff9b::7f00:1', '64:ff9b::c0a8:101']) {
      expect(policy.checkAddress('nat.example.com', address, 443), address).toMatch(/private or link-local address/);
    }
    expect(policy.checkAddress('nat.example.com', '64:ff9b::a9fe:a9fe', 443)).toMatch(/cloud metadata address/);
    // A public IPv4 host behind DNS64/NAT64 stays reachable.
    expect(policy.checkAddress('nat.example.com', '64:ff9b::5db8:d822', 443)).toBeUndefined();
    expect(new HostPolicy(['*.example.com', '10.0.0.5']).checkAddress('nat.example.com', '64:ff9b::a00:5', 443)).toBeUndefined();
  });

  it('refuses the tunnelling forms (6to4, Teredo, IPv4-compatible, local-use NAT64) unless explicitly allowlisted', () => {
    const policy = new HostPolicy(['*.example.com']);
    for (const address of ['2002:a00:5::1', '2002:5db8:d822::1', '2001:0:4136:e378:8000:63bf:3fff:fdd2', '::a00:5', '::5db8:d822', '64:ff9b:1::a00:5']) {
      expect(policy.checkAddress('tunnel.example.com', address, 443), address).toMatch(/private or link-local address/);
    }
    expect(new HostPolicy(['*.example.com', '2002::/16']).checkAddress('tunnel.example.com', '2002:5db8:d822::1', 443)).toBeUndefined();
    // Whatever the allowlist says, none of them may carry a metadata address.
    const open = new HostPolicy(['*.example.com', '::/0']);
    for (const address of ['2002:a9fe:a9fe::1', '2001:0:a9fe:a9fe::1', '2001:0:4136:e378:8000:63bf:5601:5601', '::a9fe:a9fe', '::169.254.169.254']) {
      expect(open.checkAddress('tunnel.example.com', address, 443), address).toMatch(/cloud metadata address/);
    }
  });
});

describe('hostPolicyFor', () => {
  it('builds one policy per allowlist array', () => {
    const list = ['example.com'];
    expect(hostPolicyFor(list)).toBe(hostPolicyFor(list));
    expect(hostPolicyFor(['example.com'])).not.toBe(hostPolicyFor(list));
  });
});
