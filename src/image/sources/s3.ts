// s3://bucket/key: plain HTTP GETs signed with SigV4, so the resuming machinery of
// http.ts (Range, If-Range, retries) applies unchanged; no AWS SDK on the device.
import aws4 from 'aws4';
import { HttpSource } from './http.ts';
import type { HttpRequestInit } from './http.ts';
import type { SourceOptions } from '../types.ts';

export interface S3Location {
  bucket: string;
  key: string;
}

/** Splits `s3://bucket/key`; the key is taken verbatim (as the aws CLI does). */
export function parseS3Url(spec: string): S3Location {
  const m = /^s3:\/\/([^/]+)\/(.+)$/i.exec(spec);
  if (!m) throw new Error(`not an S3 URL (expected s3://bucket/key): ${spec}`);
  return { bucket: m[1]!, key: m[2]! };
}

/** Key segments encoded the way S3 canonicalizes them (RFC 3986), slashes kept. */
function encodeKey(key: string): string {
  return key
    .split('/')
    .map((seg) => encodeURIComponent(seg).replace(/[!'()*]/g, (c) => `%${c.charCodeAt(0).toString(16).toUpperCase()}`))
    .join('/');
}

/** The HTTP URL of an object: path-style under a custom endpoint, else AWS's virtual-hosted style. */
export function s3HttpUrl(loc: S3Location, env: NodeJS.ProcessEnv = process.env): { url: URL; region: string } {
  const region = env.AWS_REGION || env.AWS_DEFAULT_REGION || 'us-east-1';
  const endpoint = env.AWS_ENDPOINT_URL_S3 || env.AWS_ENDPOINT_URL;
  if (endpoint) {
    const base = new URL(endpoint);
    // Custom endpoints (MinIO, s3rver, on-premises) rarely have per-bucket DNS names.
    base.pathname = `${base.pathname.replace(/\/+$/, '')}/${encodeURIComponent(loc.bucket)}/${encodeKey(loc.key)}`;
    return { url: base, region };
  }
  // Dots in a bucket name break the wildcard certificate of virtual-hosted names.
  const url = loc.bucket.includes('.')
    ? new URL(`https://s3.${region}.amazonaws.com/${loc.bucket}/${encodeKey(loc.key)}`)
    : new URL(`https://${loc.bucket}.s3.${region}.amazonaws.com/${encodeKey(loc.key)}`);
  return { url, region };
}

/** An S3 object as a resuming source; credentials come from the usual AWS_* variables. */
export function s3Source(spec: string, options?: SourceOptions, env: NodeJS.ProcessEnv = process.env): HttpSource {
  const loc = parseS3Url(spec);
  const accessKeyId = env.AWS_ACCESS_KEY_ID;
  const secretAccessKey = env.AWS_SECRET_ACCESS_KEY;
  if (!accessKeyId || !secretAccessKey) {
    throw new Error(
      `${spec}: no S3 credentials; set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (and AWS_SESSION_TOKEN for temporary credentials), ` +
        `or use a presigned https:// URL instead`,
    );
  }
  const sessionToken = env.AWS_SESSION_TOKEN;
  const credentials = { accessKeyId, secretAccessKey, ...(sessionToken ? { sessionToken } : {}) };
  const { url, region } = s3HttpUrl(loc, env);
  const sign = (req: HttpRequestInit): Record<string, string> => {
    const signed = aws4.sign(
      {
        service: 's3',
        region,
        method: req.method,
        host: req.url.host,
        path: req.url.pathname + req.url.search,
        // SigV4 is the authorization here; a stray one from the options would be sent twice.
        headers: Object.fromEntries(Object.entries(req.headers).filter(([k]) => k !== 'authorization')),
      },
      credentials,
    );
    const out: Record<string, string> = {};
    for (const [k, v] of Object.entries(signed.headers ?? {})) {
      if (v !== undefined) out[k] = String(v);
    }
    return out;
  };
  // A bearer token is for http(s) servers; S3 authenticates by signature only.
  const { token: _token, ...rest } = options ?? {};
  return new HttpSource({ url, sign, display: `s3://${loc.bucket}/${loc.key}`, options: rest });
}
