// Registered images (added with `bootline image add`): files, sizes, sha256, bmap and signature.
import { useEffect, useState } from 'react';
import type { Image } from '../../api/admin.ts';
import type { Api } from '../api.ts';
import { formatBytes } from '../../format.ts';

export function ImagesView({ api }: { api: Api }) {
  const [images, setImages] = useState<Image[]>();
  const [error, setError] = useState<string>();
  useEffect(() => {
    api.images().then(setImages, (e: Error) => setError(e.message));
  }, [api]);
  return (
    <section aria-labelledby="images-title">
      <h1 id="images-title">Images</h1>
      <p>
        Added on the server with <code>bootline image add FILE --name NAME [--sign-key KEY]</code>; a plan names one as <code>image:NAME</code>.
      </p>
      {error && (
        <p className="error" role="alert">
          {error}
        </p>
      )}
      {images && images.length === 0 && <p>No image is registered yet.</p>}
      {images && images.length > 0 && (
        <table className="images">
          <thead>
            <tr>
              <th scope="col">Image</th>
              <th scope="col">Version</th>
              <th scope="col">File</th>
              <th scope="col">Size</th>
              <th scope="col">sha256</th>
              <th scope="col">bmap</th>
              <th scope="col">Signature</th>
            </tr>
          </thead>
          <tbody>
            {images.flatMap((img) =>
              img.files.map((f, i) => (
                <tr key={`${img.name}/${f.name}`}>
                  {i === 0 && (
                    <th scope="row" rowSpan={img.files.length}>
                      {img.name}
                      {img.location !== 'local' && <div className="muted">{img.location}</div>}
                    </th>
                  )}
                  {i === 0 && <td rowSpan={img.files.length}>{img.version ?? '—'}</td>}
                  <td>{f.name}</td>
                  <td title={`${f.size} bytes`}>{formatBytes(f.size)}</td>
                  <td>
                    <code className="hash" title={f.sha256}>
                      {f.sha256}
                    </code>
                  </td>
                  <td>{f.bmap ?? '—'}</td>
                  <td>{f.signature ? <span className="badge run-ok">signed ({f.signature})</span> : <span className="badge run-aborted">unsigned</span>}</td>
                </tr>
              )),
            )}
          </tbody>
        </table>
      )}
    </section>
  );
}
