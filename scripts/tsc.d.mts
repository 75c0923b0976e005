// Types of tsc.mjs, for the tests (TypeScript) that compile a package's user project.
export declare const TSC_PATH: string;
