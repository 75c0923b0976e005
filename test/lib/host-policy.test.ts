import { describe, expect, it } from 'vitest';
import { HostPolicy, hostPolicyFor } from '../../src/lib/host-policy.js';

const allowed = (policy: HostPolicy, url: string) => policy.checkUrl(new URL(url)) === undefined;

describe('HostPolicy.checkUrl', () => {
  it('matches exact host names, case-insensitively, on any port unless one is given', () => {
    const policy = new HostPolicy(['API.example.com', 'hooks.example.com:8443']);
    expect(allowed(policy, 'https://api.example.com/v1')).toBe(true);
    expect(allowed(policy, 'http://Api.Example.COM:9000/')).toBe(true);
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
    expect(allowed(policy, 'http://10.1.255.255:8080/')).toBe(true);
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
    expect(allowed(policy, 'http://[::1]:3000/')).toBe(true);
    expect(allowed(policy, 'http://[0:0:0:0:0:0:0:1]/')).toBe(true);
  });

  it('treats an IPv4-mapped IPv6 address as the IPv4 address it maps', () => {
    const policy = new HostPolicy(['127.0.0.1']);
    expect(allowed(policy, 'http://[::ffff:127.0.0.1]/')).toBe(true);
    expect(allowed(policy, 'http://[::ffff:7f00:1]/')).toBe(true);
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
    expect(policy.checkAddress('www.example.com', '93.184.216.34')).toBeUndefined();
    expect(policy.checkAddress('www.example.com', '2606:2800:220:1:248:1893:25c8:1946')).toBeUndefined();
  });

  it('refuses a private, loopback or link-local address reached through a wildcard-matched name', () => {
    const policy = new HostPolicy(['*.example.com']);
    for (const address of ['10.0.0.5', '172.16.3.4', '192.168.1.1', '127.0.0.1', '169.254.10.10', '100.64.0.1', '0.0.0.0', '::1', 'fe80::1', 'fc00::7', '::ffff:192.168.1.1', '::ffff:7f00:1']) {
      expect(policy.checkAddress('internal.example.com', address), address).toMatch(/private or link-local address that is not explicitly allowlisted/);
    }
  });

  it('allows a private address when the exact name, the address or its range is allowlisted', () => {
    expect(new HostPolicy(['internal.example.com']).checkAddress('internal.example.com', '10.0.0.5')).toBeUndefined();
    expect(new HostPolicy(['*.example.com', '10.0.0.0/8']).checkAddress('internal.example.com', '10.0.0.5')).toBeUndefined();
    expect(new HostPolicy(['*.example.com', '10.0.0.5']).checkAddress('internal.example.com', '10.0.0.5')).toBeUndefined();
    expect(new HostPolicy(['*.example.com', '10.0.0.6']).checkAddress('internal.example.com', '10.0.0.5')).toMatch(/not explicitly allowlisted/);
  });

  it('refuses a metadata address whatever name led to it and whatever the allowlist says', () => {
    const policy = new HostPolicy(['metadata.google.internal', '169.254.169.254', '*.example.com']);
    expect(policy.checkAddress('metadata.google.internal', '169.254.169.254')).toMatch(/cloud metadata address/);
    expect(policy.checkAddress('rebind.example.com', '169.254.169.254')).toMatch(/cloud metadata address/);
    expect(policy.checkAddress('rebind.example.com', '::ffff:169.254.169.254')).toMatch(/cloud metadata address/);
    expect(policy.checkAddress('rebind.example.com', 'fd00:ec2::254')).toMatch(/cloud metadata address/);
  });
});

describe('hostPolicyFor', () => {
  it('builds one policy per allowlist array', () => {
    const list = ['example.com'];
    expect(hostPolicyFor(list)).toBe(hostPolicyFor(list));
    expect(hostPolicyFor(['example.com'])).not.toBe(hostPolicyFor(list));
  });
});
