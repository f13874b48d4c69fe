// The EXAMPLES section of each command's --help, by full command name.
export const EXAMPLES: Record<string, [what: string, line: string][]> = {
  bootline: [
    ['Run the pipeline of a config file', 'bootline run --config pipeline.yaml'],
    ['Write an image as bmaptool would', 'bootline image copy product.wic.zst /dev/sda'],
    ["Start the line's server", 'bootline serve --data /srv/bootline'],
    ['Enable shell completion for bash', 'source <(bootline completion bash)'],
  ],
  'bootline run': [
    ['Run the pipeline of a YAML config', 'bootline run --config pipeline.yaml'],
    ["Print the plan of Isar's local.conf lines, run nothing", 'bootline run --config local.conf --dry-run'],
    ['As an installer does, from the kernel command line only', 'bootline run --cmdline /proc/cmdline --state-dir /var/lib/bootline'],
  ],
  'bootline image': [['Write, then verify', 'bootline image copy product.wic.zst /dev/sda && bootline image verify /dev/sda --bmap product.wic.bmap']],
  'bootline image copy': [
    ['Stream a compressed image over https with its bmap', 'bootline image copy --bmap https://srv/p.wic.bmap https://srv/p.wic.zst /dev/nvme0n1'],
    ['From S3, the bmap found beside it', 'bootline image copy s3://images/product.wic.xz /dev/sda'],
  ],
  'bootline image create': [['A bmap (2.0, sha256) for a sparse image', 'bootline image create product.wic -o product.wic.bmap']],
  'bootline image verify': [['Read back every mapped range of a disk', 'bootline image verify /dev/sda --bmap product.wic.bmap']],
  'bootline image add': [['Register an image with a server data dir', 'bootline image add --data /srv/bootline --name product --image-version 1.4 product.wic.zst']],
  'bootline serve': [
    ['SQLite in a data directory', 'bootline serve --data /srv/bootline --listen 0.0.0.0:8080'],
    ['On PostgreSQL', 'bootline serve --db postgres://bootline@db/bootline'],
  ],
  'bootline lab demo': [['Two virtual devices bootstrapped over the network', 'bootline lab demo --devices 2']],
  'bootline lab up': [['Three virtual devices against a local server', 'bootline lab up --devices 3 --server http://127.0.0.1:8080']],
  'bootline completion': [
    ['bash, for this shell', 'source <(bootline completion bash)'],
    ['zsh, for every shell', 'bootline completion zsh > "${fpath[1]}/_bootline"'],
    ['fish', 'bootline completion fish > ~/.config/fish/completions/bootline.fish'],
  ],
};
