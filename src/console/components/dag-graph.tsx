import { type Edge, Handle, type Node, type NodeProps, Position, ReactFlow } from '@xyflow/react';
import '@xyflow/react/dist/base.css';
import { memo, useMemo } from 'react';
import { layeredLayout } from './dag-layout.ts';

/** A step as the graph needs it: a workflow definition's step, or a task's (with its status). */
export interface GraphStep {
  id: string;
  /** What it runs: a tool's name, `workflow <name>`, `sleep`, `wait`. */
  label?: string | null;
  depends_on?: readonly string[] | null;
}

export interface DagGraphProps {
  steps: readonly GraphStep[];
  /** Each step's status (a task's steps), which colours its node; without it the graph is a definition's. */
  statuses?: Readonly<Record<string, string>>;
  /** A short extra line per step (a for_each step's `3/10 items`). */
  notes?: Readonly<Record<string, string>>;
  selected?: string | undefined;
  onSelect?: (stepId: string) => void;
  /** What the graph shows, for screen readers: "Steps of task …". */
  label: string;
}

const NODE_WIDTH = 180;
const NODE_HEIGHT = 52;

type StepNodeData = { id: string; label: string; status?: string | undefined; note?: string | undefined };
type StepNode = Node<StepNodeData, 'step'>;

/** Left to right, by dependency; recomputed only when the steps change, not their statuses. */
function layout(steps: readonly GraphStep[]): { positions: Map<string, { x: number; y: number }>; edges: Edge[] } {
  const positions = layeredLayout(steps, { width: NODE_WIDTH, height: NODE_HEIGHT, columnGap: 48, rowGap: 16 });
  const edges = steps.flatMap((step) =>
    [...new Set(step.depends_on ?? [])].filter((dependency) => positions.has(dependency)).map((dependency) => ({ id: `${dependency}->${step.id}`, source: dependency, target: step.id })),
  );
  return { positions, edges };
}

const StepNodeView = memo(function StepNodeView({ data, selected }: NodeProps<StepNode>) {
  return (
    <div className={`dag-node status-${data.status ?? 'none'}${selected ? ' selected' : ''}`} data-step={data.id} data-status={data.status}>
      <Handle type="target" position={Position.Left} isConnectable={false} />
      <span className="dag-node-id">{data.id}</span>
      <span className="dag-node-meta">
        {data.label}
        {data.status && <> · {data.status}</>}
        {data.note && <> · {data.note}</>}
      </span>
      <Handle type="source" position={Position.Right} isConnectable={false} />
    </div>
  );
});

const NODE_TYPES = { step: StepNodeView };

/**
 * A workflow's steps as a graph (React Flow): each step a node coloured by
 * its status, each dependency an edge (laid out by dag-layout.ts). Read-only; a click on a node, or Enter on a focused one,
 * selects its step.
 */
export function DagGraph({ steps, statuses, notes, selected, onSelect, label }: DagGraphProps) {
  const { positions, edges } = useMemo(() => {
    // From here to the nodes on screen is what the 200-step budget measures (test/console).
    performance.mark('dag-layout-start');
    return layout(steps);
  }, [steps]);
  const nodes = useMemo<StepNode[]>(
    () =>
      steps.map((step) => ({
        id: step.id,
        type: 'step',
        position: positions.get(step.id) ?? { x: 0, y: 0 },
        data: { id: step.id, label: step.label ?? '', status: statuses?.[step.id], note: notes?.[step.id] },
        selected: step.id === selected,
        ariaLabel: `Step ${step.id}${statuses?.[step.id] ? `, ${statuses[step.id]}` : ''}`,
        width: NODE_WIDTH,
        height: NODE_HEIGHT,
      })),
    [steps, positions, statuses, notes, selected],
  );
  return (
    <section className="dag" aria-label={label}>
      <ReactFlow
        nodes={nodes}
        edges={edges}
        nodeTypes={NODE_TYPES}
        fitView
        fitViewOptions={{ maxZoom: 1 }}
        minZoom={0.05}
        nodesDraggable={false}
        nodesConnectable={false}
        edgesFocusable={false}
        proOptions={{ hideAttribution: true }}
        onNodeClick={(_event, node) => onSelect?.(node.id)}
        // Enter or Space on a focused node selects it (React Flow's keyboard selection).
        onSelectionChange={({ nodes: chosen }) => chosen.length === 1 && chosen[0]!.id !== selected && onSelect?.(chosen[0]!.id)}
      />
    </section>
  );
}
