// EFI GUIDs: text (8-4-4-4-12 hex) <-> the 16 bytes UEFI stores, whose first three
// fields are little-endian and last two big-endian ("mixed-endian", as efitools writes).

export class GuidError extends Error {
  override name = 'GuidError';
}

const GUID_TEXT = /^([0-9a-f]{8})-([0-9a-f]{4})-([0-9a-f]{4})-([0-9a-f]{4})-([0-9a-f]{12})$/i;

export function isGuid(text: string): boolean {
  return GUID_TEXT.test(text);
}

export function parseGuid(text: string, where = 'GUID'): Buffer {
  const m = GUID_TEXT.exec(text.trim());
  if (!m) throw new GuidError(`${where} "${text}" is not a GUID: expected 8-4-4-4-12 hex digits, e.g. 8be4df61-93ca-11d2-aa0d-00e098032b8c`);
  const [, a, b, c, d, e] = m as unknown as [string, string, string, string, string, string];
  return Buffer.concat([
    Buffer.from(a, 'hex').reverse(),
    Buffer.from(b, 'hex').reverse(),
    Buffer.from(c, 'hex').reverse(),
    Buffer.from(d, 'hex'),
    Buffer.from(e, 'hex'),
  ]);
}

export function formatGuid(bytes: Buffer): string {
  if (bytes.length !== 16) throw new GuidError(`a GUID is 16 bytes, got ${bytes.length}`);
  const h = (from: number, to: number, rev: boolean) => {
    const part = Buffer.from(bytes.subarray(from, to));
    return (rev ? part.reverse() : part).toString('hex');
  };
  return `${h(0, 4, true)}-${h(4, 6, true)}-${h(6, 8, true)}-${h(8, 10, false)}-${h(10, 16, false)}`;
}

/** GUIDs the UEFI specification defines and Secure Boot uses. */
export const GUIDS = {
  /** Vendor GUID of PK, KEK, SetupMode, SecureBoot, AuditMode, DeployedMode. */
  globalVariable: '8be4df61-93ca-11d2-aa0d-00e098032b8c',
  /** Vendor GUID of db and dbx (EFI_IMAGE_SECURITY_DATABASE_GUID). */
  imageSecurityDatabase: 'd719b2cb-3d3a-4596-a3bc-dad00e67656f',
  certX509: 'a5c059a1-94e4-4aa7-87b5-ab155c2bf072',
  certSha256: 'c1c41626-504c-4092-aca9-41f936934328',
  certTypePkcs7: '4aafd29d-68df-49ee-8aa9-347d375665a7',
  zero: '00000000-0000-0000-0000-000000000000',
} as const;
