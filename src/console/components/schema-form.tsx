import { useId } from 'react';

/** The part of JSON Schema the form reads: an object's properties, their types, enums, defaults, descriptions. */
export interface JsonSchema {
  type?: string | string[];
  title?: string;
  description?: string;
  properties?: Record<string, JsonSchema>;
  required?: string[];
  enum?: unknown[];
  default?: unknown;
  anyOf?: JsonSchema[];
  minimum?: number;
  maximum?: number;
}

export type FieldKind = 'string' | 'number' | 'integer' | 'boolean' | 'enum' | 'json';

/** How a property is edited: a control of its own for scalars and enums, JSON text for the rest (objects, arrays, unions). */
export function fieldKind(schema: JsonSchema): FieldKind {
  if (Array.isArray(schema.enum) && schema.enum.every((value) => typeof value === 'string')) return 'enum';
  const types = (Array.isArray(schema.type) ? schema.type : [schema.type]).filter((type) => type !== 'null');
  if (types.length !== 1) return 'json';
  const [type] = types;
  return type === 'string' || type === 'number' || type === 'integer' || type === 'boolean' ? type : 'json';
}

/** A field's value as the form holds it: text for inputs, a boolean for a checkbox. */
export type FieldValue = string | boolean;

export function initialValue(schema: JsonSchema): FieldValue {
  const kind = fieldKind(schema);
  if (kind === 'boolean') return schema.default === true;
  if (schema.default === undefined) return '';
  return kind === 'json' ? JSON.stringify(schema.default, null, 2) : String(schema.default);
}

/**
 * The form's values as params: empty optional fields left out (so the API applies its defaults),
 * numbers parsed, JSON fields parsed. A field that does not parse is reported at its name.
 */
export function paramsOf(schema: JsonSchema, values: Record<string, FieldValue>): { params: Record<string, unknown>; problems: Record<string, string> } {
  const params: Record<string, unknown> = {};
  const problems: Record<string, string> = {};
  for (const [name, property] of Object.entries(schema.properties ?? {})) {
    const value = values[name];
    const kind = fieldKind(property);
    if (kind === 'boolean') {
      params[name] = value === true;
      continue;
    }
    if (typeof value !== 'string' || value.trim() === '') continue;
    if (kind === 'number' || kind === 'integer') {
      const number = Number(value);
      if (Number.isNaN(number)) problems[name] = 'not a number';
      else params[name] = number;
    } else if (kind === 'json') {
      try {
        params[name] = JSON.parse(value);
      } catch (error) {
        problems[name] = `not valid JSON: ${(error as Error).message}`;
      }
    } else {
      params[name] = value;
    }
  }
  return { params, problems };
}

interface SchemaFieldsProps {
  schema: JsonSchema;
  values: Record<string, FieldValue>;
  onChange: (name: string, value: FieldValue) => void;
  /** Problems by field name: the API's, at the paths it named, and the form's own. */
  errors: Readonly<Record<string, string>>;
}

/**
 * One labelled control per property of an object schema (a tool's input, a workflow's
 * parameters). Deliberately small: the schemas here are flat objects of scalars, and anything
 * deeper is edited as JSON in its own field, which the API validates.
 */
export function SchemaFields({ schema, values, onChange, errors }: SchemaFieldsProps) {
  const prefix = useId();
  const required = new Set(schema.required ?? []);
  const entries = Object.entries(schema.properties ?? {});
  if (entries.length === 0) return <p className="hint">It takes no parameters.</p>;
  return (
    <>
      {entries.map(([name, property]) => {
        const id = `${prefix}-${name}`;
        const kind = fieldKind(property);
        const error = errors[name];
        const describedBy = [property.description ? `${id}-help` : '', error ? `${id}-error` : ''].filter(Boolean).join(' ') || undefined;
        const common = { id, name, 'aria-invalid': error ? true : undefined, 'aria-describedby': describedBy, required: required.has(name) && kind !== 'boolean' };
        const value = values[name];
        return (
          <div className={`field field-${kind}${error ? ' has-error' : ''}`} key={name} data-field={name}>
            <label htmlFor={id}>
              {property.title ?? name}
              {required.has(name) && <span aria-hidden="true"> *</span>}
              <span className="hint"> {kind === 'json' ? 'JSON' : kind}</span>
            </label>
            {kind === 'boolean' ? (
              <input {...common} type="checkbox" checked={value === true} onChange={(event) => onChange(name, event.target.checked)} />
            ) : kind === 'enum' ? (
              <select {...common} value={String(value ?? '')} onChange={(event) => onChange(name, event.target.value)}>
                {!required.has(name) && <option value="">(default)</option>}
                {(property.enum as string[]).map((option) => (
                  <option key={option}>{option}</option>
                ))}
              </select>
            ) : kind === 'json' ? (
              <textarea {...common} rows={4} className="mono" value={String(value ?? '')} onChange={(event) => onChange(name, event.target.value)} />
            ) : (
              <input
                {...common}
                type={kind === 'string' ? 'text' : 'number'}
                step={kind === 'integer' ? 1 : 'any'}
                value={String(value ?? '')}
                onChange={(event) => onChange(name, event.target.value)}
              />
            )}
            {property.description && (
              <p id={`${id}-help`} className="hint">
                {property.description}
              </p>
            )}
            {error && (
              <p id={`${id}-error`} className="field-error">
                {error}
              </p>
            )}
          </div>
        );
      })}
    </>
  );
}
