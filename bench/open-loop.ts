/**
 * Offers POST /assign-task (echo) at a fixed rate, open loop, and prints what was accepted and
 * refused. Used by bench/overload.sh. Usage: tsx bench/open-loop.ts <api url> <rate/s> <seconds>
 */
import { HttpClient, openLoop } from './lib/load.js';

const [url, rate, seconds] = [process.argv[2] ?? 'http://127.0.0.1:3000', Number(process.argv[3] ?? 100), Number(process.argv[4] ?? 10)];
const client = new HttpClient(url, 256);
const run = await openLoop(rate, seconds * 1000, async () => {
  const { status, json } = await client.post('/assign-task', { task_type: 'echo', params: { v: 1 } });
  if (status !== 202) throw new Error(String(status));
  return (json as { task_id: string }).task_id;
});
const refusals = run.arrivals
  .filter((arrival) => arrival.error === '503')
  .map((arrival) => arrival.doneAt - arrival.sentAt)
  .sort((a, b) => a - b);
const at = (q: number) => (refusals.length > 0 ? Math.round(refusals[Math.min(refusals.length - 1, Math.floor(refusals.length * q))]! * 10) / 10 : null);
console.log(
  JSON.stringify({
    offered: run.arrivals.length,
    accepted: run.arrivals.filter((arrival) => arrival.id).length,
    refused_503: refusals.length,
    other_errors: run.arrivals.filter((arrival) => arrival.error && arrival.error !== '503').length,
    refusal_p50_ms: at(0.5),
    refusal_p99_ms: at(0.99),
    generator_max_lag_ms: Math.round(run.maxLagMs),
  }),
);
await client.close();
