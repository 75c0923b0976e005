import { parentPort } from 'node:worker_threads';
import { type DocumentRequest, readOpenApiDocument } from './openapi-document.js';

/**
 * The validator compiles each OpenAPI version's schema when first used (about a second): an API
 * process asks for it at start (DocumentReader.warm), so that no registration pays for it.
 */
async function warm(): Promise<void> {
  const budget = { maxNodes: 100, maxBytes: 10_000 };
  for (const openapi of ['3.0.3', '3.1.0']) {
    await readOpenApiDocument({
      service: 'warm',
      text: JSON.stringify({ openapi, info: { title: 'warm', version: '1' }, paths: {} }),
      maxOperations: 1,
      budget,
    });
  }
}

/** The document reader's thread (src/services/document-reader.ts): one request at a time, answered by id. */
parentPort!.on('message', async ({ id, request }: { id: number; request?: DocumentRequest }) => {
  if (!request) return void (await warm());
  try {
    parentPort!.postMessage({ id, reading: await readOpenApiDocument(request) });
  } catch (error) {
    parentPort!.postMessage({ id, failure: (error as Error).message });
  }
});
