// A decompressor's output socket with room for megabytes instead of the kernel's default 208 KiB
// (net.core.wmem_default). igzip writes its output 1 MiB at a time: with the default room each
// write blocked until node had read most of it, and igzip did not decompress meanwhile. Measured
// on the benchmark's 2 GiB image: `igzip -dc | cat` 3.7-4.5 s against 2.1-2.5 s to /dev/null, and
// 2.8-2.9 s through a 1 MiB pipe. node cannot set a socket option, so the program is started
// through perl (perl-base is Essential in Debian: every Debian system has it), which sets
// SO_SNDBUF on its standard output and then execs the program in its own place: same process,
// same exit status, same signals. Without perl the program is started directly, as before.
import { onPath } from '../../which.ts';

/** What is asked for; the kernel books twice that for its own overhead. Kernel memory, not in the RSS. */
export const OUTPUT_SOCKET_BUFFER = 4 * 1024 * 1024;

/**
 * SO_SNDBUFFORCE (32) passes net.core.wmem_max and needs root; else SO_SNDBUF (7), capped there;
 * if both fail the program runs anyway. Numbers, not `use Socket`, so that the perl binary alone
 * will do (the installer carries no perl modules): SOL_SOCKET 1, as on x86 and arm (asm-generic).
 */
const SCRIPT = [
  'my ($n, $p, @a) = @ARGV;',
  // Packed: an argument is a string, and perl would pass a string's bytes as they are.
  'my $v = pack("i", $n);',
  'setsockopt(STDOUT, 1, 32, $v) or setsockopt(STDOUT, 1, 7, $v);',
  'exec { $p } @a or die "cannot run $p: $!\\n";',
].join(' ');

export interface Command {
  file: string;
  args: string[];
  /** argv[0] for spawn(); the program itself still gets `name` as its argv[0] when started through perl. */
  argv0: string;
}

/** How to start `path` (called `name`, with `args`) so that its standard output socket gets `bytes` of room; 0 starts it directly. */
export function withOutputBuffer(path: string, name: string, args: string[], bytes = OUTPUT_SOCKET_BUFFER): Command {
  const perl = bytes > 0 ? onPath('perl') : undefined;
  if (!perl) return { file: path, args, argv0: name };
  return { file: perl, args: ['-e', SCRIPT, String(bytes), path, name, ...args], argv0: 'perl' };
}
