// Who a virtual device is: its MAC address, SMBIOS serial number and UUID, derived from
// the lab's id and the device's index, so that a lab started again with the same id gives
// the server the same devices, and two labs on one server do not collide.
import { createHash } from 'node:crypto';

export interface DeviceIdentity {
  /** 1-based position in the lab. */
  index: number;
  /** Short name used for files and QEMU's -name: "dev1", "dev2"... */
  name: string;
  /** 52:54:00:xx:xx:xx (QEMU's locally administered prefix), lower case. */
  mac: string;
  /** SMBIOS system/board/chassis serial number. */
  serial: string;
  /** SMBIOS system UUID (RFC 4122, name-based). */
  uuid: string;
}

/** At most this many devices per lab: the index is the MAC's last byte. */
export const MAX_DEVICES = 250;

/** A lab id: letters, digits and "-", because it goes into serial numbers and file names. */
export const LAB_ID = /^[A-Za-z0-9-]{1,32}$/;

export class LabIdentityError extends Error {
  override name = 'LabIdentityError';
}

const hex = (b: number) => b.toString(16).padStart(2, '0');

export function deviceIdentity(labId: string, index: number): DeviceIdentity {
  if (!LAB_ID.test(labId)) throw new LabIdentityError(`lab id ${JSON.stringify(labId)} must be 1 to 32 letters, digits or "-"`);
  if (!Number.isInteger(index) || index < 1 || index > MAX_DEVICES) throw new LabIdentityError(`device index must be 1 to ${MAX_DEVICES}, not ${index}`);
  const labHash = createHash('sha256').update(`bootline-lab:${labId}`).digest();
  // Bytes 4 and 5 from the lab, byte 6 the index: distinct within a lab by construction.
  const mac = ['52', '54', '00', hex(labHash[0]!), hex(labHash[1]!), hex(index)].join(':');
  const u = createHash('sha1').update(`bootline-lab:${labId}:${index}`).digest().subarray(0, 16);
  u[6] = (u[6]! & 0x0f) | 0x50; // version 5 (name-based, SHA-1)
  u[8] = (u[8]! & 0x3f) | 0x80; // RFC 4122 variant
  const h = u.toString('hex');
  const uuid = `${h.slice(0, 8)}-${h.slice(8, 12)}-${h.slice(12, 16)}-${h.slice(16, 20)}-${h.slice(20)}`;
  const serial = `LAB-${labId.toUpperCase()}-${String(index).padStart(3, '0')}`;
  return { index, name: `dev${index}`, mac, serial, uuid };
}
